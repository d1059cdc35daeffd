"""Canonical types shared by every stage."""
