"""Distribution tests: the sdist and wheel as a user receives them (twine check, contents, the quick start)."""
