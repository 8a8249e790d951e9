"""Triton kernels for CUDA devices, one op per module, each behind its torch twin's signature.

They decode the stored formats (packed FP4, FP8 e4m3, ue8m0) with integer bit operations, which the Triton CPU
interpreter (TRITON_INTERPRET=1, how CI runs them) and every GPU generation handle alike. They must run on triton 3.6
(the GPU image) and 3.9.
"""
