"""The research side: what was recorded and how well (`coverage`), and getting it out (`export`).

The SQL views and functions researchers query directly live in migrations/0006_research.sql.
"""
