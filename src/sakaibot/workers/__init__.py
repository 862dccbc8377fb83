"""Image workers: the httpx client for both worker contracts and the development worker."""
