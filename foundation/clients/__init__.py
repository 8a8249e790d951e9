"""Typed gRPC clients of the platform's services: the model worker (`worker`), the jobs service (`jobs`) and the
agent service (`agent`)."""
