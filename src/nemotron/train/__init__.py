"""Training: SentencePiece tokenizers, pretraining and chat SFT of Nemotron-architecture models, and the
generated corpus and build of the embedded demo model.

    tokenizer_training.py  train a tokenizer.model with Nemotron's special ids
    data.py                token stream (pretraining) and chat dataset with assistant-only loss mask (SFT)
    schedule.py            warmup + cosine learning rate
    trainer.py             the loop: AdamW, clipping, bf16 autocast on GPU, logging, resume
    checkpoint.py          Hugging Face checkpoints plus optimizer/RNG state
    demo_*.py, demo.py     the offline demo corpus and the demo model build
    cli.py                 `nemotron train tokenizer | pretrain | sft | demo`
"""
