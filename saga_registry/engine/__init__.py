"""The generic saga runtime: runs any registry's services as a choreography."""
