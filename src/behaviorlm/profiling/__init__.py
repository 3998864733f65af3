"""Understanding users: anomalies and bots (profiles, interests and segments follow)."""
