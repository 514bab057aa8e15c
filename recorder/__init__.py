"""bitexbit market-data recorder."""
