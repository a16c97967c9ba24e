"""Everything that produces signed evidence: keys, canonical JSON, DSSE envelopes, statements."""
