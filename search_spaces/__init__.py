"""YAML sweep specs, addressable by name (`mixsweep run selection_schemes`); see `orchestrator.spec`."""
