"""grantd: an OAuth 2.0 authorization server speaking the Neucron OAuth API and standard OAuth 2.0."""

__version__ = "0.1.0"
