"""Admission: per-key request and token limits."""
