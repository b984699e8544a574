"""biotwin: digital twin and predictive quality for a bioreactor / vaccine-adjuvant line."""

__version__ = "0.1.0"
