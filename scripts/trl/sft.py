"""One round of the loop's LoRA SFT on Hugging Face TRL + PEFT, run by `accelerate launch` (the loop's
`train.backend = "trl"`). Every choice that decides the numbers comes from the job file the loop writes, so that the
steps are the ones autodidact's own trainer would take:

- rows: token ids and labels (-100 where the row's loss_mask is 0), exactly the dataset's; no re-tokenising;
- the micro-batches of every step, in order (the loop's seeded, length-bucketed plan), via a batch sampler;
- the starting adapter (PEFT files: a fresh seeded one or the current model's), trained in place;
- AdamW (betas, eps, weight decay), the learning rate of every step (warmup + cosine, computed by the loop),
  gradient clipping, gradient accumulation; the loss is the summed NLL of a step's trained tokens over their count.

    accelerate launch [ARGS] scripts/trl/sft.py JOB.json

Writes JOB's `out`/adapter (PEFT files) and `out`/steps.jsonl (one line per optimizer step: step, loss, grad_norm,
seconds). Multi-GPU (`--num_processes N`, DeepSpeed, FSDP): each process takes every N-th micro-batch of the plan,
so a step trains N times the rows; the loss and adapter format are unchanged.
"""
import json
import os
import sys
import time

import torch
from peft import PeftModel
from torch.utils.data import DataLoader, Sampler
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer
from datasets import Dataset


class PlanSampler(Sampler):
    """The job's micro-batches, in order, as lists of row indices."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class PlannedSFTTrainer(SFTTrainer):
    def __init__(self, *args, plan, **kwargs):
        self.plan = plan
        super().__init__(*args, **kwargs)

    def get_train_dataloader(self):
        loader = DataLoader(self.train_dataset, batch_sampler=PlanSampler(self.plan), collate_fn=self.data_collator)
        return self.accelerator.prepare(loader)


class StepLog(TrainerCallback):
    """steps.jsonl: each optimizer step's logged loss and gradient norm (before clipping) and its wall time."""

    def __init__(self, path, is_main):
        self.path, self.is_main, self.t0 = path, is_main, None
        if is_main:
            open(path, "w").close()

    def on_step_begin(self, args, state, control, **kw):
        self.t0 = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kw):
        if not self.is_main or not logs or "loss" not in logs:
            return
        line = {"step": state.global_step, "loss": logs["loss"], "grad_norm": logs.get("grad_norm"), "seconds": time.perf_counter() - self.t0}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        job = json.load(f)
    torch.manual_seed(job["seed"])
    dtype = getattr(torch, job.get("dtype", "float32"))
    base = AutoModelForCausalLM.from_pretrained(job["base"], dtype=dtype)
    base.config.use_cache = False
    model = PeftModel.from_pretrained(base, job["start_adapter"], is_trainable=True)
    tokenizer = AutoTokenizer.from_pretrained(job["base"])
    rows = []
    with open(job["rows"]) as f:
        for line in f:
            rows.append(json.loads(line))
    dataset = Dataset.from_list(rows)
    adam = job["adam"]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=job["lr"][0], betas=(adam["beta1"], adam["beta2"]), eps=adam["eps"], weight_decay=adam["weight_decay"])
    for g in opt.param_groups:
        g["initial_lr"] = job["lr"][0]
    lrs = job["lr"]
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lrs[min(s, len(lrs) - 1)] / lrs[0])
    out = job["out"]
    os.makedirs(out, exist_ok=True)
    args = SFTConfig(
        output_dir=os.path.join(out, "trainer"),
        max_steps=job["steps"],
        per_device_train_batch_size=job["batch_size"],
        gradient_accumulation_steps=job["grad_accum"],
        max_grad_norm=job["max_grad_norm"],
        seed=job["seed"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        max_length=None,
        packing=False,
        gradient_checkpointing=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        bf16=dtype == torch.bfloat16,
        fp16=False,
        disable_tqdm=True,
    )
    trainer = PlannedSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        optimizers=(opt, schedule),
        plan=job["micro_batches"],
    )
    trainer.add_callback(StepLog(os.path.join(out, "steps.jsonl"), trainer.accelerator.is_main_process))
    trainer.train()
    trainer.save_model(os.path.join(out, "adapter"))


if __name__ == "__main__":
    main()
