"""Campaign audiences by propensity and uplift under a budget (uses causal and models)."""
