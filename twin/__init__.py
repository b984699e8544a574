"""biotwin's plant twin: a SimPy model of a bioreactor / vaccine-adjuvant line."""
