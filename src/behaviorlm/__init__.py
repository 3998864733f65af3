"""behaviorlm: turn raw user-behaviour logs into clean data, behaviour models and explanations."""

__version__ = "0.1.0"
