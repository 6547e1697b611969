"""``vllm``: vLLM's engine driven step by step, token-id prompts, on vLLM's CPU
build or a GPU.

vllm is imported only when :class:`engines.vllm.engine.VllmEngine` is
created (the registry imports that module only when asked for); the
package-free parts (:mod:`engines.vllm.mapping`) are tested on any machine.
"""
