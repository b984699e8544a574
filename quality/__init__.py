"""biotwin quality (see the open issues; not built yet)."""
