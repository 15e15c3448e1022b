"""``bastion scan``: find credentials embedded in bot code and configuration."""
