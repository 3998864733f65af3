"""The LLM layer: grounded facts in, words out (intent explanations, segment descriptions, answers)."""
