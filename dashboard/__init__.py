"""biotwin dashboard: the Streamlit command center and its supervisor.

- :mod:`dashboard.app` and ``dashboard/views/``: overview, QA triage, asset health,
  scenarios, models.
- :mod:`dashboard.plant`, :mod:`dashboard.audit`, :mod:`dashboard.session`: unit status and
  live plant state from the historian; the audit trail; sign-in.
- :mod:`dashboard.cli`: ``biotwin dashboard`` and ``biotwin up``.

See docs/dashboard.md.
"""
