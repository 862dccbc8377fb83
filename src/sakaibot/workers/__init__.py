"""Image workers: the httpx client for both worker contracts, and what an image really is.

The development worker that stands in for them is its own package, :mod:`sakaibot.devworker`.
"""
