set -x
export PYTHONPATH=$PWD/platform PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
nvidia-smi -L
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__, torch.cuda.is_available())"
python3 -m freshrec.bench.throughput --pairs-dir .gpu/pairs --models .gpu/tiny,.gpu/minilm --device cuda --repeats 3 --batch-size 64 --out $OUT/b64 2>&1 | grep -v "Loading weights"
python3 -m freshrec.bench.throughput --pairs-dir .gpu/pairs --models .gpu/minilm --device cuda --repeats 3 --batch-size 512 --out $OUT/b512 2>&1 | grep -v "Loading weights"
