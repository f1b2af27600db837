"""Benchmarks and load scripts for people; ``make test`` runs small versions of them."""
