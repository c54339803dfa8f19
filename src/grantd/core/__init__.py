"""Use cases: the rules of grantd, free of HTTP and of SQL text."""
