"""Test fixtures shared by the unit and integration tiers: manifest tables and cluster helpers.

Given/When/Then helpers in the manner of Argo's test/fixtures; kept in the package so both test
tiers (and later components' tests) import one copy.
"""
