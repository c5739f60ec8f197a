"""otelpipe core: the data model, config, graph, runtime and the machinery every component shares."""
