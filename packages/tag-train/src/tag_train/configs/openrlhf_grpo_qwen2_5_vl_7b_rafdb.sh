#!/usr/bin/env bash
# OpenRLHF 0.11 GRPO of the SFT checkpoint with TAG's rewards: the hyperparameters of
# grpo_qwen2_5_vl_7b_rafdb.yaml (8 samples per prompt, temperature 1.0, lr 1e-6, 1024-token
# completions, KL 0.04 as a loss with the k3 estimator, weights 1/1/1, 16 prompts = 128
# completions per update, 8 per GPU, 1 % warmup then constant, 1 epoch, checkpoints every 200
# steps, 3 kept, seed 42, bf16, gradient checkpointing, vLLM with 0.3 of GPU memory).
#   tag-train export --format openrlhf --dataset_path runs/traces-rafdb-qwen2_5_vl --output_dir data/tag-openrlhf
#   bash openrlhf_grpo_qwen2_5_vl_7b_rafdb.sh      # extra flags may follow
# Every flag name is in OpenRLHF 0.11.2's openrlhf/cli/train_ppo_ray.py (checked, not run here).
# OpenRLHF's processor sees the original image: TAG's default pixel budget converts the boxes.
set -euo pipefail
DATA=${DATA:-data/tag-openrlhf}
MODEL=${MODEL:-runs/sft-qwen2_5_vl-7b-rafdb}
REWARD=$(python -c "import tag_train.integrations.openrlhf as m; print(m.__file__)")

python3 -m openrlhf.cli.train_ppo_ray \
    --actor.model_name_or_path "$MODEL" \
    --actor.num_nodes 1 \
    --actor.num_gpus_per_node 8 \
    --ref.num_nodes 1 \
    --ref.num_gpus_per_node 8 \
    --train.colocate_all \
    --vllm.num_engines 8 \
    --vllm.tensor_parallel_size 1 \
    --vllm.gpu_memory_utilization 0.3 \
    --vllm.enable_sleep \
    --data.prompt_dataset "$DATA/train.jsonl" \
    --data.input_key prompt \
    --data.label_key label \
    --data.image_key images \
    --data.max_images_per_prompt 1 \
    --data.apply_chat_template \
    --data.max_len 2048 \
    --reward.remote_url "$REWARD" \
    --algo.advantage.estimator group_norm \
    --algo.kl.use_loss \
    --algo.kl.init_coef 0.04 \
    --algo.kl.estimator k3 \
    --rollout.n_samples_per_prompt 8 \
    --rollout.temperature 1.0 \
    --rollout.max_new_tokens 1024 \
    --rollout.batch_size 16 \
    --train.batch_size 128 \
    --train.micro_batch_size 8 \
    --rollout.micro_batch_size 8 \
    --train.max_epochs 1 \
    --train.num_episodes 1 \
    --train.seed 42 \
    --actor.adam.lr 1e-6 \
    --actor.lr_warmup_ratio 0.01 \
    --actor.lr_scheduler constant_with_warmup \
    --actor.gradient_checkpointing_enable \
    --ds.param_dtype bf16 \
    --ds.zero_stage 3 \
    --ckpt.save_steps 200 \
    --ckpt.max_num 3 \
    --ckpt.path runs/openrlhf-grpo-qwen2_5_vl-7b-rafdb/ckpt \
    --ckpt.output_dir runs/openrlhf-grpo-qwen2_5_vl-7b-rafdb \
    "$@"
