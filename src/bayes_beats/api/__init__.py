"""What the service speaks: schemas, the request guard, image vibe, catalog, request log."""
