# lipar build. `make` builds the library, the CLI and the tests into build/;
# `make SAN=1` builds the same into build-san/ with AddressSanitizer and UBSan.
# Sources are discovered, so adding a file under src/ needs no edit here.

SAN ?= 0
ifeq ($(SAN),1)
BUILD ?= build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := -O1 -g
else
BUILD ?= build
SANFLAGS :=
OPT := -O2 -g
endif

CC ?= gcc
# VIDEO=0 builds without FFmpeg, for machines that lack its libraries, such as
# the GPU machines the benchmarks run on: video I/O (and so `lipar edit`) reads
# and writes only y4m and raw rgb24 (src/io/video_noffmpeg.c instead of
# src/io/video.c). SKIP_SRC: the sources the chosen variant leaves out.
VIDEO ?= 1
ifeq ($(VIDEO),1)
PKGS := libavformat libavcodec libswscale libavutil
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
SKIP_SRC := src/io/video_noffmpeg.c
else
PKG_CFLAGS :=
PKG_LIBS :=
SKIP_SRC := src/io/video.c tests/test_video.c
endif
CFLAGS = -std=c11 -Wall -Wextra -Werror $(OPT) -D_GNU_SOURCE -pthread $(CUDA_DEF) -Iinclude -I/usr/include/x86_64-linux-gnu/openblas-pthread $(PKG_CFLAGS) $(SANFLAGS) $(EXTRA_CFLAGS)
LDLIBS = $(PKG_LIBS) -lopenblas $(CUDA_LIBS) -lpthread -lm
LDFLAGS := $(SANFLAGS)

LIB_SRC := $(filter-out $(SKIP_SRC),$(shell find src -name '*.c' | sort))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)

# The CUDA backend is built when nvcc is found (not in the sanitizer build);
# CUDA=0 turns it off.
NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
ifeq ($(SAN),1)
CUDA := 0
endif
CUDA ?= $(if $(NVCC),1,0)
ifeq ($(CUDA),1)
CUDA_HOME ?= $(abspath $(dir $(NVCC))/..)
CU_SRC := $(shell find src -name '*.cu' | sort)
CU_OBJ := $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
LIB_OBJ += $(CU_OBJ)
NVCCFLAGS := -O3 -std=c++17 -lineinfo -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=compute_80 \
	-Xcompiler -Wall,-Wextra,-fPIC -Iinclude $(EXTRA_NVCCFLAGS)
CUDA_DEF := -DLP_HAVE_CUDA
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcudart -lstdc++
endif
TOOL_SRC := $(filter-out $(SKIP_SRC),$(shell find tools -name '*.c' | sort))
TOOL_OBJ := $(TOOL_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(filter-out tests/test_util.c $(SKIP_SRC),$(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_UTIL_OBJ := $(BUILD)/tests/test_util.o
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all test test-san deps clean FORCE
all: $(BUILD)/lipar $(TEST_BIN) $(BENCH_BIN)

# Objects depend on the configuration, so that switching CUDA/VIDEO in one build
# folder rebuilds what changed.
CONFIG := CUDA=$(CUDA) VIDEO=$(VIDEO) SAN=$(SAN) EXTRA=$(EXTRA_CFLAGS)
$(BUILD)/.config: FORCE
	@mkdir -p $(@D)
	@echo '$(CONFIG)' | cmp -s - $@ || echo '$(CONFIG)' > $@
FORCE:

$(BUILD)/liblipar.a: $(LIB_OBJ) $(BUILD)/.config
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $(LIB_OBJ)

$(BUILD)/%.o: %.c Makefile $(BUILD)/.config
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.cu.o: %.cu Makefile $(BUILD)/.config
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/lipar: $(TOOL_OBJ) $(BUILD)/liblipar.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_UTIL_OBJ) $(BUILD)/liblipar.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/liblipar.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Runs every unit, golden and CLI test; the last line is "N passed, M failed".
test: all
	BUILD=$(BUILD) tests/run.sh

test-san:
	$(MAKE) SAN=1 test

deps:
	scripts/install-deps.sh

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
