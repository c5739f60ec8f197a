"""otelpipe, the distribution: the command line, `python -m otelpipe` and the list of components.

The library every component builds on is `pipeline`; the components live in
`receivers`, `processors`, `exporters` and `connectors`.
"""
