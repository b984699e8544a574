"""biotwin connectors (see the open issues; not built yet)."""
