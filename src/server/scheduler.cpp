#include "server/scheduler.h"

#include <algorithm>
#include <cmath>
#include <new>

#include "tappa/kv.h"
#include "tappa/model.h"

namespace tappa::server {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Bytes of one token in every list of the cache (every layer, every KV head, K and V, fp32 host rows).
size_t token_bytes(const Model& model) {
  const ModelConfig& c = model.config();
  return static_cast<size_t>(c.n_layer) * c.n_head_kv * c.head_dim * 2 * sizeof(float);
}

// The logit rows a sequence holds: a prompt chunk's rows when its log probabilities are asked for
// (echo), else the last row. Not KV, but the echo of a long prompt holds many of them, so admission
// counts them too.
size_t logits_bytes(const Model& model, int n_prompt, const GenerateOptions& o, bool one_pass) {
  const size_t V = static_cast<size_t>(model.config().n_vocab);
  size_t rows = 1;
  if (o.prompt_logprobs) rows = one_pass ? static_cast<size_t>(n_prompt) : static_cast<size_t>(std::min(n_prompt, std::max(o.prefill_chunk, 1)));
  return rows * V * sizeof(float);
}

std::string mib(size_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f MiB", static_cast<double>(b) / 1048576.0);
  return s;
}

}  // namespace

size_t full_kv_bytes(const Model& model, int64_t n_tokens) { return static_cast<size_t>(n_tokens) * token_bytes(model); }

size_t estimate_kv_bytes(const Model& model, int n_prompt, const GenerateOptions& o) {
  const size_t tok = token_bytes(model);
  const bool compressing = o.kv.method != "fullkv" || o.kv.budget || o.kv.ratio;
  if (compressing) {
    KvCompressor comp(model, o.kv);
    if (comp.active()) {
      comp.check(n_prompt);
      const ModelConfig& c = model.config();
      const size_t L = static_cast<size_t>(c.n_layer);
      const size_t layer_row = tok / L;  // one token in one layer (every KV head)
      // Rows per layer the budget keeps, plus slack for per-head rounding and the protected window.
      const size_t C = static_cast<size_t>(std::min(comp.capacity_for(n_prompt), n_prompt)) + 64;
      const size_t kept = C * L;
      // The one-pass prefill: finished layers compressed, the current one whole.
      const size_t prefill_peak = kept + static_cast<size_t>(n_prompt);
      // Decoding: a list grows by 1.5x when it fills; without decode eviction every new token stays.
      const size_t decode = kept * 3 / 2 + static_cast<size_t>(o.max_tokens) * L;
      return std::max(prefill_peak, decode) * layer_row + logits_bytes(model, n_prompt, o, true);
    }
  }
  // fullkv: the scheduler reserves exactly prompt + max_tokens rows before the prefill.
  return static_cast<size_t>(n_prompt + o.max_tokens) * tok + logits_bytes(model, n_prompt, o, false);
}

struct Scheduler::Running {
  std::shared_ptr<Job> job;
  std::unique_ptr<Generator> gen;
  size_t reserve = 0;
  bool prefilled = false;
  int64_t generated = 0;  // counted so far
};

Scheduler::Scheduler(Engine& engine, SchedulerOptions options) : engine_(engine), opts_(options) {
  stats_.kv_cap = opts_.kv_cap_bytes;
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  shutdown_.cancel();
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::submit(std::span<const std::shared_ptr<Job>> jobs) {
  std::lock_guard lock(mu_);
  if (stopping_) throw Refusal{503, "server_shutting_down", "the server is shutting down", 5};
  for (const auto& j : jobs)
    if (j->reserve_bytes > opts_.kv_cap_bytes) {
      ++stats_.rejected_too_large;
      throw Refusal{400, "invalid_request_error",
                    "this request needs up to " + mib(j->reserve_bytes) + " of KV memory (prompt " +
                        std::to_string(j->prompt.size()) + " tokens + max_tokens " + std::to_string(j->options.max_tokens) +
                        ", kv_method " + j->options.kv.method + "), more than the server's cap of " + mib(opts_.kv_cap_bytes) +
                        ": shorten the prompt, lower max_tokens or compress the cache (kv_method, kv_budget)"};
    }
  if (static_cast<int>(queue_.size() + jobs.size()) > opts_.max_queue) {
    stats_.rejected_queue_full += static_cast<int64_t>(jobs.size());
    // A rough wait: the queue ahead at the recent completion rate.
    throw Refusal{503, "server_busy",
                  "the server is at capacity: " + std::to_string(running_.size()) + " requests running and " +
                      std::to_string(queue_.size()) + " waiting (the queue holds " + std::to_string(opts_.max_queue) +
                      "); retry later",
                  std::clamp(static_cast<int>(queue_.size()) / std::max(opts_.max_running, 1) + 1, 1, 60)};
  }
  const auto now = std::chrono::steady_clock::now();
  for (const auto& j : jobs) {
    j->state = Job::State::queued;
    j->queued_at = now;
    queue_.push_back(j);
  }
  stats_.jobs_submitted += static_cast<int64_t>(jobs.size());
  wake_.notify_all();
}

void Scheduler::cancel(Job& job) {
  job.cancel.store(true);
  wake_.notify_all();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lock(mu_);
  SchedulerStats s = stats_;
  s.running = static_cast<int>(running_.size());
  s.queued = static_cast<int>(queue_.size());
  s.kv_bytes_reserved = reserved_;
  s.kv_bytes_held = held_;
  return s;
}

void Scheduler::fail(const std::shared_ptr<Job>& job, Refusal why) {
  job->error = std::move(why);
  job->state = Job::State::done;
  job->finished_at = std::chrono::steady_clock::now();
  ++stats_.jobs_failed;
  if (job->cv) job->cv->notify_all();
}

// With mu_ held: the job's result, counters, reservation released; the generator (and with it the
// sequence and its cache) is destroyed by the caller right after.
void Scheduler::finish(Running& r, std::unique_lock<std::mutex>& lock) {
  Job& j = *r.job;
  j.result = r.gen->result();
  j.state = Job::State::done;
  j.finished_at = std::chrono::steady_clock::now();
  if (j.result.finish == FinishReason::cancelled)
    ++stats_.jobs_cancelled;
  else
    ++stats_.jobs_finished;
  if (j.result.kv) {
    const KvRecord& k = *j.result.kv;
    if (k.compressed) ++stats_.kv_compressed_jobs;
    int64_t evicted = k.decode_evicted;
    for (const KvLayerRecord& l : k.layers)
      if (l.active) evicted += static_cast<int64_t>(l.n_tokens) * static_cast<int64_t>(l.heads.empty() ? 1 : l.heads.size()) - l.kept;
    stats_.kv_evicted_rows += std::max<int64_t>(evicted, 0);
  }
  reserved_ -= std::min(reserved_, r.reserve);
  if (j.cv) j.cv->notify_all();
}

void Scheduler::loop() {
  const Model& model = engine_.model();
  std::unique_lock lock(mu_);
  while (true) {
    if (stopping_) break;
    // Queued jobs whose client left, or whose wait ran out.
    for (auto it = queue_.begin(); it != queue_.end();) {
      Job& j = **it;
      if (j.cancel.load()) {
        j.state = Job::State::done;
        ++stats_.jobs_cancelled;
        if (j.cv) j.cv->notify_all();
        it = queue_.erase(it);
      } else if (seconds_since(j.queued_at) > opts_.queue_timeout_s) {
        ++stats_.rejected_queue_timeout;
        fail(*it, Refusal{503, "server_busy",
                          "the request waited " + std::to_string(static_cast<int>(opts_.queue_timeout_s)) +
                              " s in the queue without KV memory or a batch slot to run; retry later",
                          std::max(1, static_cast<int>(opts_.queue_timeout_s / 4))});
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    // Admission, first come first served: the head waits until its reservation fits.
    std::vector<std::shared_ptr<Job>> starting;
    while (!queue_.empty() && static_cast<int>(running_.size() + starting.size()) < opts_.max_running &&
           reserved_ + queue_.front()->reserve_bytes <= opts_.kv_cap_bytes) {
      reserved_ += queue_.front()->reserve_bytes;
      starting.push_back(queue_.front());
      queue_.pop_front();
    }
    if (running_.empty() && starting.empty()) {
      held_ = 0;
      wake_.wait_for(lock, std::chrono::milliseconds(queue_.empty() ? 1000 : 100));
      continue;
    }
    lock.unlock();

    // New generators (a sequence each); fullkv ones get their whole cache up front, so that what they
    // hold is exactly what was reserved.
    std::vector<std::unique_ptr<Running>> started;
    for (auto& j : starting) {
      try {
        auto r = std::make_unique<Running>();
        r->job = j;
        r->reserve = j->reserve_bytes;
        r->gen = std::make_unique<Generator>(engine_, j->prompt, j->options);
        if (!r->gen->compressor())
          r->gen->sequence().cache().reserve_extra(static_cast<int>(j->prompt.size()) + j->options.max_tokens);
        started.push_back(std::move(r));
      } catch (const Error& e) {
        lock.lock();
        reserved_ -= std::min(reserved_, j->reserve_bytes);
        fail(j, Refusal{e.code() == ErrorCode::internal ? 500 : 400, "invalid_request_error", e.what()});
        lock.unlock();
      } catch (const std::bad_alloc&) {
        lock.lock();
        reserved_ -= std::min(reserved_, j->reserve_bytes);
        fail(j, Refusal{503, "server_busy", "out of memory while starting the request; retry later", 5});
        lock.unlock();
      }
    }

    lock.lock();
    const auto now = std::chrono::steady_clock::now();
    for (auto& r : started) {
      r->job->state = Job::State::running;
      r->job->started_at = now;
      if (r->job->cv) r->job->cv->notify_all();  // a handler waits for admission before it answers
      running_.push_back(std::move(r));
    }
    // Running jobs whose client left: end them now, freeing their sequences.
    for (auto it = running_.begin(); it != running_.end();) {
      if ((*it)->job->cancel.load() || (*it)->gen->done()) {
        (*it)->gen->cancel();
        finish(**it, lock);
        it = running_.erase(it);
      } else {
        ++it;
      }
    }
    if (running_.empty()) continue;
    lock.unlock();

    // This step: every decode, and prompt chunks in admission order up to the token budget (at least one).
    std::vector<Generator*> batch;
    std::vector<Running*> in_batch;
    int budget = opts_.step_prompt_tokens;
    bool any_prompt = false;
    for (auto& r : running_) {
      Generator& g = *r->gen;
      const int64_t past = g.sequence().n_past(), n = g.n_prompt();
      bool take = true;
      if (past < n) {
        const int64_t chunk = g.compressor() ? n - past : std::min<int64_t>(n - past, std::max(r->job->options.prefill_chunk, 1));
        take = !any_prompt || chunk <= budget;
        if (take) {
          budget -= static_cast<int>(chunk);
          any_prompt = true;
        }
      }
      if (take) {
        batch.push_back(&g);
        in_batch.push_back(r.get());
      }
    }
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::pair<Generator*, std::string>> out;
    std::optional<Refusal> step_error;
    try {
      out = step_all(engine_, batch, RunControl{&shutdown_, {}});
    } catch (const Error& e) {
      if (e.code() == ErrorCode::cancelled)
        step_error = Refusal{503, "server_shutting_down", "the server is shutting down", 5};
      else
        step_error = Refusal{500, "internal_error", std::string("the engine failed: ") + e.what()};
    } catch (const std::bad_alloc&) {
      step_error = Refusal{503, "server_busy", "out of memory in the engine; retry later", 5};
    }
    const double dt = seconds_since(t0);

    lock.lock();
    ++stats_.steps;
    stats_.step_seconds += dt;
    if (step_error) {
      // The sequences of this step are in an unknown state: their requests fail; the others go on.
      for (auto it = running_.begin(); it != running_.end();) {
        if (std::find(in_batch.begin(), in_batch.end(), it->get()) != in_batch.end()) {
          reserved_ -= std::min(reserved_, (*it)->reserve);
          fail((*it)->job, *step_error);
          it = running_.erase(it);
        } else {
          ++it;
        }
      }
      continue;
    }
    for (auto& [g, text] : out) {
      Running* r = *std::find_if(in_batch.begin(), in_batch.end(), [g = g](Running* x) { return x->gen.get() == g; });
      Job& j = *r->job;
      if (!text.empty()) {
        j.text += text;
        if (j.cv && j.stream) j.cv->notify_all();
      }
      const int64_t ng = g->n_generated();
      stats_.generated_tokens += ng - r->generated;
      r->generated = ng;
      if (!r->prefilled && g->sequence().n_past() >= g->n_prompt()) {
        r->prefilled = true;
        stats_.prompt_tokens += g->n_prompt();
        // The prefill is over: a compressed cache now holds its budget; the reservation shrinks to
        // what it holds plus its growth bound for the rest of the generation.
        if (KvCompressor* c = g->compressor()) {
          const size_t held = g->sequence().cache().bytes_held();
          const size_t tok = full_kv_bytes(model, 1);
          const size_t rest = static_cast<size_t>(std::max<int64_t>(j.options.max_tokens - ng, 0));
          const size_t bound = held * 3 / 2 + (c->record().decode_eviction ? 2 * tok : rest * tok) +
                               static_cast<size_t>(model.config().n_vocab) * sizeof(float);
          if (bound < r->reserve) {
            reserved_ -= r->reserve - bound;
            r->reserve = bound;
          }
        }
      }
    }
    // What the caches hold now (checked against the reservations: a miss means the estimate is wrong).
    size_t held = 0;
    for (auto& r : running_) {
      const size_t h = r->gen->sequence().cache().bytes_held() + r->gen->sequence().logits().size() * sizeof(float);
      r->job->kv_bytes_peak = std::max(r->job->kv_bytes_peak, h);
      if (h > r->reserve) {
        ++stats_.kv_estimate_misses;
        reserved_ += h - r->reserve;
        r->reserve = h;
      }
      held += h;
    }
    held_ = held;
    stats_.kv_bytes_held_max = std::max(stats_.kv_bytes_held_max, held);
    // Throughput over the last ten seconds.
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    rate_.push_back({t, {stats_.prompt_tokens, stats_.generated_tokens}});
    while (rate_.size() > 2 && t - rate_.front().first > 10.0) rate_.pop_front();
    if (rate_.size() >= 2 && t > rate_.front().first) {
      const double span = t - rate_.front().first;
      stats_.prompt_tokens_per_s = static_cast<double>(rate_.back().second.first - rate_.front().second.first) / span;
      stats_.generated_tokens_per_s = static_cast<double>(rate_.back().second.second - rate_.front().second.second) / span;
    }
    for (auto it = running_.begin(); it != running_.end();) {
      if ((*it)->gen->done()) {
        finish(**it, lock);
        std::unique_ptr<Running> done = std::move(*it);
        it = running_.erase(it);
        lock.unlock();
        done.reset();  // the sequence and its cache go now, outside the lock
        lock.lock();
      } else {
        ++it;
      }
    }
  }
  // Stopping: every job still here ends.
  for (auto& r : running_) {
    r->gen->cancel();
    finish(*r, lock);
  }
  running_.clear();
  for (auto& j : queue_) fail(j, Refusal{503, "server_shutting_down", "the server is shutting down", 5});
  queue_.clear();
  held_ = 0;
}

}  // namespace tappa::server
