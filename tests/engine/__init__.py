"""Tests of the call engine's pure building blocks: call tokens, pacing, agent protocol."""
