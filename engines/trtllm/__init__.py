"""``trtllm``: TensorRT-LLM behind the engine contract (GPU only).

Two paths, chosen by what the manifest's ``model`` directory holds:

- a Hugging Face checkpoint: the LLM API, PyTorch backend
  (:mod:`engines.trtllm.llm_api`), token-id prompts through ``generate_async``;
- a built engine directory (``config.json`` with ``build_config``, and
  ``rank0.engine``): ``tensorrt_llm.bindings.executor.Executor``
  (:mod:`engines.trtllm.executor`), where the installed release still has it.

tensorrt_llm is imported only when
:class:`engines.trtllm.engine.TrtllmEngine` is created. The
package-free parts (:mod:`engines.trtllm.artifact`, :mod:`engines.trtllm.mapping`)
are tested on any machine.
"""
