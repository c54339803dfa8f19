"""The only part of grantd that speaks SQL: tables, queries and migrations."""
