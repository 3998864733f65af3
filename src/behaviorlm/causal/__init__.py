"""Why: per-user influence of past behaviours on a prediction, and population effects of behaviours."""
