"""External validation suite: process data written independently of biotwin's twin.

``datasets`` holds the generators (batch processes and run-to-failure assets), ``baselines``
the plain models every product figure is compared with, and ``run.py`` the one command that
runs the product's CLI on each data set as a customer would.
"""
