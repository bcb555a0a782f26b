"""Test doubles for the serving port: a scripted OpenAI-compatible model server.

Ships with the package (not under tests/) so every other package's tests can drive the real
client over real HTTP without a model engine. Nothing in the appliance imports it.
"""

from serving.testing.scripted import RecordedRequest, ScriptedModelServer, deterministic_embedding

__all__ = ["RecordedRequest", "ScriptedModelServer", "deterministic_embedding"]
