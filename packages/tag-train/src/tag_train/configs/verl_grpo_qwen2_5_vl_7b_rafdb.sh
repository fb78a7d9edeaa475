#!/usr/bin/env bash
# verl 0.9.1 GRPO of the SFT checkpoint with TAG's rewards: the hyperparameters of
# grpo_qwen2_5_vl_7b_rafdb.yaml (8 generations, temperature 1.0, lr 1e-6, 1024-token
# completions, KL beta 0.04, weights 1/1/1, grounding beta 1.0 class-aware, 8 completions per
# GPU x 2 accumulation steps on 8 GPUs = 16 prompts per update, 1 epoch, 1 % warmup then
# constant, checkpoints every 200 steps, 3 kept, seed 42). verl needs a rollout engine: vLLM here.
#   tag-train export --format verl --dataset_path runs/traces-rafdb-qwen2_5_vl --output_dir data/tag-verl --val_size 256
#   bash verl_grpo_qwen2_5_vl_7b_rafdb.sh            # extra hydra overrides may follow
# The exported ground_truth carries the processor's default pixel budget; if you change
# data.mm_processor_kwargs / the processor's min_pixels or max_pixels, export with the same
# --min_pixels / --max_pixels so TAG converts the model's boxes the way the model saw the image.
set -euo pipefail
DATA=${DATA:-data/tag-verl}
MODEL=${MODEL:-runs/sft-qwen2_5_vl-7b-rafdb}
REWARD=$(python -c "import tag_train.integrations.verl as m; print(m.__file__)")

python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    algorithm.use_kl_in_reward=False \
    data.train_files="$DATA/train.parquet" \
    data.val_files="$DATA/val.parquet" \
    data.prompt_key=prompt \
    data.image_key=images \
    data.train_batch_size=16 \
    data.max_prompt_length=1024 \
    data.max_response_length=1024 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    data.seed=42 \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.01 \
    actor_rollout_ref.actor.optim.lr_scheduler_type=constant \
    actor_rollout_ref.actor.ppo_mini_batch_size=16 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.04 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.actor.entropy_coeff=0 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.3 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8 \
    reward.custom_reward_function.path="$REWARD" \
    reward.custom_reward_function.name=compute_score \
    +reward.custom_reward_function.reward_kwargs.format_weight=1.0 \
    +reward.custom_reward_function.reward_kwargs.answer_weight=1.0 \
    +reward.custom_reward_function.reward_kwargs.grounding_weight=1.0 \
    +reward.custom_reward_function.reward_kwargs.beta=1.0 \
    +reward.custom_reward_function.reward_kwargs.class_aware=True \
    reward.reward_manager.name=naive \
    trainer.total_epochs=1 \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.save_freq=200 \
    trainer.max_actor_ckpt_to_keep=3 \
    trainer.test_freq=200 \
    trainer.logger='["console"]' \
    trainer.project_name=tag \
    trainer.experiment_name=grpo-qwen2_5_vl-7b-rafdb \
    trainer.default_local_dir=runs/verl-grpo-qwen2_5_vl-7b-rafdb \
    "$@"
