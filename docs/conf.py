# Sphinx settings for tmta's guide: sphinx-build docs docs/_build
project = "tmta"
author = "the tmta authors"
copyright = "the tmta authors (MIT license)"
extensions: list = []
exclude_patterns = ["_build", "examples"]
html_theme = "alabaster"
