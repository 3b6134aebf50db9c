"""`saga ui`: a web view of a registry's sagas, read from its services' databases and
its dead-letter topic."""
