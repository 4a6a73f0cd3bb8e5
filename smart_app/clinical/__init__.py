"""The pure clinical core: stdlib only, time is a parameter; one module per rule under `rules/`."""
