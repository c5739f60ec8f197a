"""The `genai_metrics` connector: the four layers of agent signals (service, LLM, agent, business) from
the GenAI and MCP spans agents already send. `connector.FACTORY` is the component."""
