"""Jinja2 templates and static assets of the report site (package data, no Python logic).

Kept apart from ``reports`` so that the look of the site can change without touching the
analyses, and so that a packager can see at a glance which files ship as data. The builder finds
them with :func:`importlib.resources.files`; ``assets/`` is copied into every site as it is.
"""
