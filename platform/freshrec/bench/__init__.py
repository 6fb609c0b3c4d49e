"""Benchmarks behind ``freshrec bench ...``: each prints a table and writes JSON plus Markdown."""
