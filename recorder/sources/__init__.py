"""The daemon's sources: each turns one part of the exchange into records for the writer."""
