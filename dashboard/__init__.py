"""biotwin dashboard (see the open issues; not built yet)."""
