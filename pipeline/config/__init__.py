"""Configuration: YAML and env expansion (`confmap`), typed decoding (`types`), the decoded shape (`schema`),
cross-checks (`checks`) and loading (`loader`)."""
