// The launch gate: replays of repeated launch sequences as CUDA graphs (common.cuh says how and why).
#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <utility>

#include "backend/cuda/common.cuh"

namespace tappa::cuda {

namespace {

// Regions shorter than this are not worth a graph (and must not displace the one recorded).
constexpr size_t kMinRecs = 16;
// A region longer than this (a long prompt's launches) is not recorded.
constexpr size_t kMaxRecs = 8192;
constexpr size_t kMaxRecBytes = size_t{8} << 20;  // their argument bytes
constexpr size_t kDynCap = size_t{4} << 20;

std::mutex g_mu;
std::vector<std::pair<cudaStream_t, Gate*>> g_gates;

bool env_off(const char* name) {
  const char* v = std::getenv(name);
  return v && (std::string(v) == "0" || std::string(v) == "off");
}

}  // namespace

bool pdl_enabled() {
  // Read once: the launch attribute must be the same for every launch of a recorded region.
  static const bool on = [] {
    // Off unless asked for: measured on the H200 (docs/PERFORMANCE.md, 2026-12-04) it gives nothing
    // at the Llama-3.1-8B shape (183.1 tok/s both ways) and costs 2.4 % at Qwen2.5-7B's.
    const char* v = std::getenv("TAPPA_CUDA_PDL");
    if (!v || std::string(v) != "1") return false;
    int dev = 0, major = 0;
    return cudaGetDevice(&dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9;
  }();
  return on;
}

Gate* gate_of(cudaStream_t s) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (auto& [st, g] : g_gates)
    if (st == s) return g;
  return nullptr;
}

Gate::Gate(cudaStream_t s) : s_(s) {
  enabled_ = !env_off("TAPPA_CUDA_GRAPHS") && std::getenv("TAPPA_CUDA_PROFILE") == nullptr;
  dyn_cap_ = kDynCap;
  TAPPA_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&dyn_host_), dyn_cap_, cudaHostAllocDefault));
  TAPPA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&dyn_dev_), dyn_cap_));
  std::lock_guard<std::mutex> lock(g_mu);
  g_gates.emplace_back(s, this);
}

Gate::~Gate() {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_gates.erase(std::remove_if(g_gates.begin(), g_gates.end(), [this](auto& e) { return e.second == this; }),
                  g_gates.end());
  }
  if (exec_) cudaGraphExecDestroy(exec_);
  cudaFreeHost(dyn_host_);
  cudaFree(dyn_dev_);
}

const void* Gate::dyn_bytes(const void* host, size_t bytes) {
  size_t off = (dyn_used_ + 15) / 16 * 16;
  if (off + bytes > dyn_cap_) {
    // Full: everything queued so far must have read its part before the block is refilled.
    barrier();
    TAPPA_CUDA_CHECK(cudaStreamSynchronize(s_));
    dyn_used_ = dyn_uploaded_ = 0;
    off = 0;
  }
  if (bytes > 0) std::memcpy(dyn_host_ + off, host, bytes);
  if (dyn_uploaded_ == dyn_used_) dyn_uploaded_ = off;  // skip the alignment gap
  dyn_used_ = off + bytes;
  // Eager (or recording): the launch that reads it follows at once.
  if (!enabled_ || !replaying_) upload_dyn();
  return dyn_dev_ + off;
}

void Gate::upload_dyn() {
  if (dyn_used_ > dyn_uploaded_)
    TAPPA_CUDA_CHECK(cudaMemcpyAsync(dyn_dev_ + dyn_uploaded_, dyn_host_ + dyn_uploaded_, dyn_used_ - dyn_uploaded_,
                                     cudaMemcpyHostToDevice, s_));
  dyn_uploaded_ = dyn_used_;
}

bool Gate::absorb() {
  if (!replaying_) return false;
  if (cursor_ < prev_.size() && prev_[cursor_].sig == sig_) {
    ++cursor_;
    return true;
  }
  catch_up();
  return false;
}

void Gate::record(std::function<void(cudaStream_t)> run) {
  cur_bytes_ += sig_.size();
  if (overflow_ || cur_.size() >= kMaxRecs || cur_bytes_ > kMaxRecBytes) {
    overflow_ = true;
    return;
  }
  cur_.push_back({sig_, std::move(run)});
}

void Gate::catch_up() {
  upload_dyn();
  cur_.clear();
  overflow_ = false;
  cur_bytes_ = 0;
  for (size_t i = 0; i < cursor_; ++i) {
    prev_[i].run(s_);
    cur_.push_back(prev_[i]);
    cur_bytes_ += prev_[i].sig.size();
  }
  replaying_ = false;
  cursor_ = 0;
}

void Gate::barrier() {
  if (!enabled_) return;
  if (replaying_) {
    if (cursor_ == 0) {  // nothing skipped
      upload_dyn();
      return;
    }
    if (cursor_ == prev_.size()) {  // the whole previous region again: one graph launch
      upload_dyn();
      if (!exec_ && !exec_failed_) {
        cudaGraph_t g = nullptr;
        bool ok = cudaStreamBeginCapture(s_, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
        if (ok) {
          try {
            for (Rec& r : prev_) r.run(s_);
          } catch (...) {
            ok = false;
          }
          ok = cudaStreamEndCapture(s_, &g) == cudaSuccess && ok;
        }
        ok = ok && g && cudaGraphInstantiate(&exec_, g, 0) == cudaSuccess;
        if (g) cudaGraphDestroy(g);
        if (!ok) {
          cudaGetLastError();
          exec_ = nullptr;
          exec_failed_ = true;  // run the records eagerly instead
        } else {
          ++instantiations_;
        }
      }
      if (exec_) {
        TAPPA_CUDA_CHECK(cudaGraphLaunch(exec_, s_));
        ++replays_;
      } else {
        for (Rec& r : prev_) r.run(s_);
      }
      cursor_ = 0;
      return;
    }
    catch_up();  // a prefix matched, then the region ended: it ran eagerly and ends here
  }
  end_region();
}

void Gate::end_region() {
  if (!overflow_ && cur_.size() >= kMinRecs) {
    prev_.swap(cur_);
    if (exec_) cudaGraphExecDestroy(exec_);
    exec_ = nullptr;
    exec_failed_ = false;
  }
  cur_.clear();
  overflow_ = false;
  cur_bytes_ = 0;
  replaying_ = true;
  cursor_ = 0;
  upload_dyn();
}

}  // namespace tappa::cuda
