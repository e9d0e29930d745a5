"""Vision-language model evaluation: prompts, answer parsing, backends, response cache and the engine.

Public entry points (heavy libraries are imported only inside them):

- :func:`medvlm.vlm.evaluate.evaluate_vlm` -- the whole ``eval-vlm`` run (slices -> votes -> metrics).
- :func:`medvlm.vlm.engine.ask_images` -- ask a backend about images, N times each, through the cache
  (reused by the consistency command).
- :func:`medvlm.vlm.prompts.load_prompt`, :data:`medvlm.vlm.prompts.ANSWER_PREFIX`.
- :class:`medvlm.vlm.parsing.ChoiceParser` -- answer text -> answer code or None (each task builds one).
- :func:`medvlm.vlm.tiny.make_tiny_vlm` -- a tiny stand-in Llama-3.2-Vision for tests and the demo.
- :func:`medvlm.vlm.hf.build_chat_text` -- the chat text the transformers backend (and fine-tuning) uses.
"""
