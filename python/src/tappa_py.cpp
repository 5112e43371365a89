// The Python module `tappa` (docs/PYTHON.md): bindings of the public API in include/tappa only.
// Weights are never copied (Model::load maps the file; Python holds the shared_ptr); compute runs with
// the GIL released; tappa::Error becomes tappa.Error (or a subclass per ErrorCode) carrying .code.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tappa/analysis.h"
#include "tappa/control.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/eval.h"
#include "tappa/generate.h"
#include "tappa/gguf.h"
#include "tappa/kv.h"
#include "tappa/model.h"
#include "tappa/prune.h"
#include "tappa/tokenizer.h"

namespace py = pybind11;
using namespace tappa;

namespace {

PyObject* g_error = nullptr;
PyObject* g_classes[6] = {};

PyObject* class_for(ErrorCode c) {
  const int i = static_cast<int>(c);
  return (i >= 0 && i < 6 && g_classes[i]) ? g_classes[i] : g_error;
}

py::str to_str(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

template <class T>
py::array_t<T> to_array2(const std::vector<T>& v, size_t rows, size_t cols) {
  return py::array_t<T>(std::vector<py::ssize_t>{static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(cols)},
                        v.data());
}

template <class T>
py::array_t<T> to_array(const std::vector<T>& v) {
  return py::array_t<T>(std::vector<py::ssize_t>{static_cast<py::ssize_t>(v.size())}, v.data());  // a copy
}

// Cancellation: a token the caller may set from any thread, and Ctrl-C (checked from the progress
// callback of long calls, which runs on the calling thread between layer passes).
struct PyCancel {
  CancelToken token;
  bool interrupted = false;  // a KeyboardInterrupt is pending (PyErr set)
};

RunControl make_control(PyCancel& c, const CancelToken* user) {
  RunControl rc;
  rc.cancel = &c.token;
  rc.on_progress = [&c, user](int64_t, int64_t) {
    if (user && user->cancelled()) c.token.cancel();
    if (c.interrupted) return;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {  // KeyboardInterrupt (or another handler's exception) is now set
      c.interrupted = true;
      c.token.cancel();
    }
  };
  if (user && user->cancelled()) c.token.cancel();
  return rc;
}

// Rethrows a pending Python exception (KeyboardInterrupt) in place of the C++ cancellation.
template <class F>
auto run_cancellable(const CancelToken* user, F&& f) {
  PyCancel c;
  RunControl rc = make_control(c, user);
  using R = decltype(f(rc));
  std::optional<R> r;
  try {
    py::gil_scoped_release nogil;
    r.emplace(f(rc));
  } catch (const Error& e) {
    if (c.interrupted && e.code() == ErrorCode::cancelled) throw py::error_already_set();
    throw;
  }
  // The signal came after the work's last cancellation check: the call finished, the exception stands.
  if (c.interrupted) throw py::error_already_set();
  return std::move(*r);
}

std::vector<int32_t> prompt_tokens(const Model& model, const py::object& prompt, bool add_special,
                                   bool parse_special) {
  if (py::isinstance<py::str>(prompt)) {
    const std::string text = prompt.cast<std::string>();
    py::gil_scoped_release nogil;
    return model.tokenizer().encode(text, add_special, parse_special);
  }
  return prompt.cast<std::vector<int32_t>>();
}

KvOptions kv_options(const std::string& kv, std::optional<int> budget, std::optional<double> ratio) {
  KvOptions o;
  o.method = kv;
  o.budget = budget;
  o.ratio = ratio;
  return o;
}

// One streaming generation (Python's iterator protocol over Generator::next_step / advance).
struct Stream {
  std::shared_ptr<Engine> engine;  // kept alive by the stream
  std::shared_ptr<const Model> model;
  std::unique_ptr<Generator> gen;
  std::shared_ptr<CancelToken> user_cancel;

  std::optional<std::string> next() {
    while (!gen->done()) {
      std::string text = run_cancellable(user_cancel.get(), [&](const RunControl& rc) {
        Engine::Step step = gen->next_step();
        engine->decode(std::span<const Engine::Step>(&step, 1), rc);
        return gen->advance();
      });
      if (!text.empty()) return text;
    }
    return std::nullopt;
  }
};

struct PyEngine {
  std::shared_ptr<const Model> model;
  std::shared_ptr<Engine> engine;
};

GenerateOptions gen_options(int max_tokens, const std::string& kv, std::optional<int> budget,
                            std::optional<double> ratio, float temperature, int top_k, float top_p,
                            uint64_t seed, std::vector<std::string> stop, bool ignore_eos, int logprobs,
                            bool prompt_logprobs) {
  GenerateOptions o;
  o.max_tokens = max_tokens;
  o.sampling = SamplingParams{temperature, top_k, top_p, seed};
  o.stop = std::move(stop);
  o.ignore_eos = ignore_eos;
  o.kv = kv_options(kv, budget, ratio);
  o.logprobs = logprobs;
  o.prompt_logprobs = prompt_logprobs;
  return o;
}

// The record of a KV compression with per-layer and per-head arrays.
py::dict record_dict(const KvRecord& r) {
  py::dict d;
  d["method"] = r.method;
  d["scorer"] = r.scorer;
  d["allocator"] = r.allocator;
  d["n_prompt"] = r.n_prompt;
  d["capacity"] = r.capacity;
  d["window"] = r.window;
  d["ratio"] = r.ratio;
  d["compressed"] = r.compressed;
  d["bytes_held_before"] = r.bytes_held_before;
  d["bytes_held_after"] = r.bytes_held_after;
  const size_t L = r.layers.size();
  size_t H = 0;
  for (const auto& l : r.layers) H = std::max(H, l.heads.size());
  std::vector<int32_t> budget(L), kept(L), n_tokens(L), hb(L * H), hk(L * H);
  std::vector<double> qsim(L), pref(L), hq(L * H);
  std::vector<uint8_t> active(L);
  for (size_t l = 0; l < L; ++l) {
    const KvLayerRecord& lr = r.layers[l];
    budget[l] = lr.budget;
    kept[l] = lr.kept;
    n_tokens[l] = lr.n_tokens;
    qsim[l] = lr.qsim;
    pref[l] = lr.preference;
    active[l] = lr.active;
    for (size_t h = 0; h < lr.heads.size(); ++h) {
      hb[l * H + h] = lr.heads[h].budget;
      hk[l * H + h] = lr.heads[h].kept;
      hq[l * H + h] = lr.heads[h].qsim;
    }
  }
  d["budget"] = to_array(budget);
  d["kept"] = to_array(kept);
  d["n_tokens"] = to_array(n_tokens);
  d["qsim"] = to_array(qsim);
  d["preference"] = to_array(pref);
  d["active"] = to_array(active).attr("astype")("bool");
  d["head_budget"] = to_array2(hb, L, H);
  d["head_kept"] = to_array2(hk, L, H);
  d["head_qsim"] = to_array2(hq, L, H);
  d["json"] = to_json(r, true);
  return d;
}

py::dict result_dict(const GenerateResult& r) {
  py::dict d;
  d["text"] = to_str(r.text);
  d["tokens"] = r.tokens;
  d["n_prompt"] = r.n_prompt;
  d["finish"] = std::string(finish_reason_name(r.finish));
  d["stop_matched"] = r.stop_matched;
  std::vector<float> plp, lp;
  for (const auto& t : r.prompt_logprobs) plp.push_back(t.logprob);
  for (const auto& t : r.logprobs) lp.push_back(t.logprob);
  d["prompt_logprobs"] = to_array(plp);
  d["logprobs"] = to_array(lp);
  d["prompt_seconds"] = r.prompt_seconds;
  d["generate_seconds"] = r.generate_seconds;
  d["kv_bytes_held"] = r.kv_bytes_held;
  d["kv"] = r.kv ? py::object(record_dict(*r.kv)) : py::object(py::none());
  return d;
}

// nlohmann::json to Python objects through the json module (results, reports: nested, not hot).
py::object json_to_py(const nlohmann::json& j) {
  return py::module_::import("json").attr("loads")(to_str(j.dump()));
}
nlohmann::json py_to_json(const py::object& o) {
  return nlohmann::json::parse(py::module_::import("json").attr("dumps")(o).cast<std::string>());
}

// One per-head field of an analysis as a [n_layer, n_head] array.
template <class T, class F>
py::array_t<T> head_field(const AnalysisResult& r, int n_layer, int n_head, F get) {
  std::vector<T> v(static_cast<size_t>(n_layer) * n_head);
  for (const HeadAnalysis& h : r.heads) v[static_cast<size_t>(h.layer) * n_head + h.head] = static_cast<T>(get(h));
  return to_array2(v, n_layer, n_head);
}
template <class F>
py::list head_strings(const AnalysisResult& r, int n_layer, int n_head, F get) {
  std::vector<std::vector<std::string>> v(n_layer, std::vector<std::string>(n_head));
  for (const HeadAnalysis& h : r.heads) v[h.layer][h.head] = get(h);
  py::list out;
  for (auto& row : v) out.append(py::cast(row));
  return out;
}

// An analysis result held for Python: its numbers as numpy arrays, the report on request.
struct PyAnalysis {
  std::shared_ptr<const AnalysisResult> r;
  int n_layer = 0, n_head = 0;
};

}  // namespace

PYBIND11_MODULE(_tappa, m) {
  m.doc() = "tappa: LLM inference, attention analysis and KV-cache compression (bindings of include/tappa)";

  py::enum_<ErrorCode>(m, "ErrorCode", "tappa::ErrorCode: what kind of failure a tappa.Error is")
      .value("bad_input", ErrorCode::bad_input)
      .value("bad_file", ErrorCode::bad_file)
      .value("context_overflow", ErrorCode::context_overflow)
      .value("out_of_memory", ErrorCode::out_of_memory)
      .value("cancelled", ErrorCode::cancelled)
      .value("internal", ErrorCode::internal);

  g_error = PyErr_NewExceptionWithDoc("tappa.Error", "A tappa::Error; .code is its tappa.ErrorCode", nullptr, nullptr);
  m.attr("Error") = py::handle(g_error);
  struct Sub {
    ErrorCode code;
    const char* name;
    PyObject* extra;
  };
  const Sub subs[] = {{ErrorCode::bad_input, "BadInput", PyExc_ValueError},
                      {ErrorCode::bad_file, "BadFile", PyExc_OSError},
                      {ErrorCode::context_overflow, "ContextOverflow", nullptr},
                      {ErrorCode::out_of_memory, "OutOfMemory", PyExc_MemoryError},
                      {ErrorCode::cancelled, "Cancelled", nullptr},
                      {ErrorCode::internal, "InternalError", nullptr}};
  for (const Sub& s : subs) {
    PyObject* bases = s.extra ? PyTuple_Pack(2, g_error, s.extra) : PyTuple_Pack(1, g_error);
    const std::string qual = std::string("tappa.") + s.name;
    PyObject* cls = PyErr_NewException(qual.c_str(), bases, nullptr);
    Py_DECREF(bases);
    g_classes[static_cast<int>(s.code)] = cls;
    m.attr(s.name) = py::handle(cls);
  }
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      PyObject* cls = class_for(e.code());
      py::object exc = py::reinterpret_steal<py::object>(PyObject_CallFunction(cls, "s", e.what()));
      if (!exc) return;  // the call set its own exception
      exc.attr("code") = py::cast(e.code());
      PyErr_SetObject(cls, exc.ptr());
    }
  });

  m.def("kv_presets", [] {
    std::vector<std::pair<std::string, std::string>> v;
    for (const KvMethodInfo& i : kv_presets()) v.push_back({i.name, i.description});
    return v;
  }, "The KV methods' preset names with their descriptions (as `tappa run --help` lists them)");
  m.def("validate_kv", [](const std::string& kv, std::optional<int> budget, std::optional<double> ratio) {
    validate_kv_options(kv_options(kv, budget, ratio));
  }, py::arg("kv"), py::arg("budget") = py::none(), py::arg("ratio") = py::none(),
     "Checks a KV spec and budget without a model (tappa.BadInput with the CLI's message)");

  py::class_<CancelToken, std::shared_ptr<CancelToken>>(m, "CancelToken",
                                                         "Set from any thread to stop a running call (tappa.Cancelled)")
      .def(py::init<>())
      .def("cancel", &CancelToken::cancel)
      .def("reset", &CancelToken::reset)
      .def_property_readonly("cancelled", &CancelToken::cancelled);

  py::class_<Model, std::shared_ptr<Model>>(m, "Model", "A GGUF model: weights mapped from the file, never copied")
      .def(py::init([](const std::string& path) {
             py::gil_scoped_release nogil;
             return Model::load(path);
           }),
           py::arg("path"), "Opens and maps a GGUF file (tappa.BadFile on any problem)")
      .def_property_readonly("config", [](const Model& mo) {
        const ModelConfig& c = mo.config();
        py::dict d;
        d["arch"] = c.arch_name;
        d["name"] = c.name;
        d["n_layer"] = c.n_layer;
        d["n_embd"] = c.n_embd;
        d["n_head"] = c.n_head;
        d["n_head_kv"] = c.n_head_kv;
        d["head_dim"] = c.head_dim;
        d["n_ff"] = c.n_ff;
        d["n_vocab"] = c.n_vocab;
        d["n_ctx_train"] = c.n_ctx_train;
        d["rope_base"] = c.rope_base;
        d["n_rot"] = c.n_rot;
        return d;
      }, "The model's configuration (GGUF metadata) as a dict")
      .def("tokenize", [](const Model& mo, const std::string& text, bool add_special, bool parse_special) {
             py::gil_scoped_release nogil;
             return mo.tokenizer().encode(text, add_special, parse_special);
           },
           py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = false,
           "Text to token ids (add_special: BOS as the file says; parse_special: special-token text becomes tokens)")
      .def("detokenize", [](const Model& mo, const std::vector<int32_t>& ids, bool render_special) {
             std::string s;
             {
               py::gil_scoped_release nogil;
               s = mo.tokenizer().decode(ids, render_special);
             }
             return to_str(s);
           },
           py::arg("ids"), py::arg("render_special") = false, "Token ids to text (invalid UTF-8 replaced)")
      .def("token_to_piece", [](const Model& mo, int32_t id, bool render_special) {
             if (id < 0 || id >= mo.tokenizer().n_vocab()) throw Error(ErrorCode::bad_input, "token id out of range: " + std::to_string(id));
             return py::bytes(mo.tokenizer().token_to_piece(id, render_special));
           },
           py::arg("id"), py::arg("render_special") = false, "The bytes of one token")
      .def("apply_chat_template", [](const Model& mo, const std::vector<std::pair<std::string, std::string>>& msgs,
                                     bool add_generation_prompt) {
             std::vector<ChatMessage> v;
             for (const auto& [r, c] : msgs) v.push_back({r, c});
             return mo.tokenizer().apply_chat_template(v, add_generation_prompt);
           },
           py::arg("messages"), py::arg("add_generation_prompt") = true,
           "Renders [(role, content), …] with the file's chat template")
      .def_property_readonly("n_vocab", [](const Model& mo) { return mo.tokenizer().n_vocab(); })
      .def_property_readonly("bos", [](const Model& mo) { return mo.tokenizer().bos(); })
      .def_property_readonly("eos", [](const Model& mo) { return mo.tokenizer().eos(); })
      .def("is_eog", [](const Model& mo, int32_t id) { return mo.tokenizer().is_eog(id); }, py::arg("id"));

  py::class_<Stream>(m, "Stream", "A generation in progress: iterate for text pieces; result() when done")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", [](Stream& s) -> py::str {
        std::optional<std::string> t = s.next();
        if (!t) throw py::stop_iteration();
        return to_str(*t);
      })
      .def("cancel", [](Stream& s) { s.gen->cancel(); }, "Ends the generation now (finish 'cancelled')")
      .def_property_readonly("done", [](const Stream& s) { return s.gen->done(); })
      .def_property_readonly("tokens", [](const Stream& s) { return s.gen->result().tokens; })
      .def("result", [](const Stream& s) { return result_dict(s.gen->result()); },
           "text, tokens, finish, logprobs (numpy), kv (the compression record) …");

  py::class_<PyEngine>(m, "Engine", "Runs a model: a backend and its workspaces; any number of generations")
      .def(py::init([](std::shared_ptr<Model> model, int n_threads, int n_ctx, int n_batch, const std::string& backend) {
             EngineOptions o;
             o.n_threads = n_threads;
             o.n_ctx = n_ctx;
             o.n_batch = n_batch;
             o.backend = backend;
             py::gil_scoped_release nogil;
             return PyEngine{model, std::make_shared<Engine>(std::shared_ptr<const Model>(model), o)};
           }),
           py::arg("model"), py::arg("n_threads") = 0, py::arg("n_ctx") = 4096, py::arg("n_batch") = 512,
           py::arg("backend") = "cpu")
      .def_property_readonly("model", [](const PyEngine& e) { return std::const_pointer_cast<Model>(e.model); })
      .def_property_readonly("n_ctx", [](const PyEngine& e) { return e.engine->n_ctx(); })
      .def_property_readonly("n_threads", [](const PyEngine& e) { return e.engine->n_threads(); })
      .def("stream",
           [](PyEngine& e, const py::object& prompt, int max_tokens, const std::string& kv, std::optional<int> budget,
              std::optional<double> ratio, float temperature, int top_k, float top_p, uint64_t seed,
              std::vector<std::string> stop, bool ignore_eos, int logprobs, bool prompt_logprobs, bool add_special,
              bool parse_special, std::shared_ptr<CancelToken> cancel) {
             auto s = std::make_unique<Stream>();
             s->engine = e.engine;
             s->model = e.model;
             s->user_cancel = std::move(cancel);
             std::vector<int32_t> toks = prompt_tokens(*e.model, prompt, add_special, parse_special);
             GenerateOptions o = gen_options(max_tokens, kv, budget, ratio, temperature, top_k, top_p, seed,
                                             std::move(stop), ignore_eos, logprobs, prompt_logprobs);
             s->gen = std::make_unique<Generator>(*e.engine, std::move(toks), std::move(o));
             return s;
           },
           py::arg("prompt"), py::arg("max_tokens") = 128, py::arg("kv") = "fullkv", py::arg("budget") = py::none(),
           py::arg("ratio") = py::none(), py::arg("temperature") = 0.0f, py::arg("top_k") = 40,
           py::arg("top_p") = 0.95f, py::arg("seed") = 0, py::arg("stop") = std::vector<std::string>{},
           py::arg("ignore_eos") = false, py::arg("logprobs") = -1, py::arg("prompt_logprobs") = false,
           py::arg("add_special") = true, py::arg("parse_special") = false, py::arg("cancel") = nullptr,
           "A streaming generation of `prompt` (text or token ids) with a KV method (spec string + budget/ratio)")
      .def("compress",
           [](PyEngine& e, const py::object& prompt, const std::string& kv, std::optional<int> budget,
              std::optional<double> ratio, bool add_special, std::shared_ptr<CancelToken> cancel) {
             std::vector<int32_t> toks = prompt_tokens(*e.model, prompt, add_special, false);
             KvRecord rec = run_cancellable(cancel.get(), [&](const RunControl& rc) {
               KvCompressor comp(*e.model, kv_options(kv, budget, ratio));
               const int n = static_cast<int>(toks.size());
               comp.check(n);
               auto seq = e.engine->new_sequence(n);
               seq->set_policy(&comp);
               if (Observer* ob = comp.observer()) {  // h2o: the engine's attention rows
                 seq->set_observer(ob);
                 comp.expect_prompt(n);
               }
               e.engine->eval(*seq, toks, false, rc);
               return comp.record();
             });
             return record_dict(rec);
           },
           py::arg("prompt"), py::arg("kv") = "tappa", py::arg("budget") = py::none(), py::arg("ratio") = py::none(),
           py::arg("add_special") = true, py::arg("cancel") = nullptr,
           "Prefills `prompt` under KV method `kv` (a spec string) at `budget` tokens per layer on average (or "
           "`ratio`) and returns the compression record (the CLI's `tappa compress --json`): numpy arrays per layer "
           "(budget, kept, qsim, preference, n_tokens, active) and per [layer, kv_head] (head_budget, head_kept, "
           "head_qsim), and 'json'")
      .def("set_skip_layers",
           [](PyEngine& e, std::vector<int> layers) {
             const int n = e.model->config().n_layer;
             for (int l : layers)
               if (l < 0 || l >= n) throw Error(ErrorCode::bad_input, "skip layer " + std::to_string(l) + " out of range [0, " + std::to_string(n) + ")");
             e.engine->set_skip_layers(std::move(layers));
           },
           py::arg("layers"), "In-memory layer pruning: these layers are skipped by every later call ([] restores)")
      .def_property_readonly("skip_layers", [](const PyEngine& e) {
        std::vector<int> v;
        const auto& s = e.engine->skip_layers();
        for (size_t i = 0; i < s.size(); ++i)
          if (s[i]) v.push_back(static_cast<int>(i));
        return v;
      })
      .def("logits",
           [](PyEngine& e, const std::vector<int32_t>& tokens, std::shared_ptr<CancelToken> cancel) {
             const int n_vocab = e.model->config().n_vocab;
             py::array_t<float> out({static_cast<py::ssize_t>(tokens.size()), static_cast<py::ssize_t>(n_vocab)});
             float* dst = out.mutable_data();
             run_cancellable(cancel.get(), [&](const RunControl& rc) {
               auto seq = e.engine->new_sequence(static_cast<int>(tokens.size()));
               std::span<const float> l = e.engine->eval(*seq, tokens, true, rc);
               std::copy(l.begin(), l.end(), dst);
               return 0;
             });
             return out;
           },
           py::arg("tokens"), py::arg("cancel") = nullptr, "Logits of every token, numpy float32 [n, n_vocab]");

  // ---- Analysis (include/tappa/analysis.h) ------------------------------------------------------
  py::class_<PyAnalysis>(m, "Analysis",
                         "TAPPA's analysis of a text: per-head q-similarity variants, pattern labels, RoPE channels "
                         "and predictions as numpy arrays [n_layer, n_head]; write_report() draws the HTML report")
      .def_property_readonly("n_tokens", [](const PyAnalysis& a) { return a.r->n_tokens; })
      .def_property_readonly("n_layer", [](const PyAnalysis& a) { return a.n_layer; })
      .def_property_readonly("n_head", [](const PyAnalysis& a) { return a.n_head; })
#define TAPPA_HEAD_F(name) \
      .def_property_readonly(#name, [](const PyAnalysis& a) { \
        return head_field<double>(*a.r, a.n_layer, a.n_head, [](const HeadAnalysis& h) { return h.name; }); })
      TAPPA_HEAD_F(qsim_post_last) TAPPA_HEAD_F(qsim_pre_last) TAPPA_HEAD_F(qsim_pre_sliding)
      TAPPA_HEAD_F(qsim_post_sliding) TAPPA_HEAD_F(qsim_lag1) TAPPA_HEAD_F(ksim_lag1)
      TAPPA_HEAD_F(topk_stability) TAPPA_HEAD_F(topk_predictability) TAPPA_HEAD_F(sink_mass)
      TAPPA_HEAD_F(sink4_mass) TAPPA_HEAD_F(reaccess_mass) TAPPA_HEAD_F(diag_mass) TAPPA_HEAD_F(best_offset_mass)
      TAPPA_HEAD_F(period_strength) TAPPA_HEAD_F(dominance) TAPPA_HEAD_F(wavelength)
#undef TAPPA_HEAD_F
      .def_property_readonly("kv_head", [](const PyAnalysis& a) {
        return head_field<int32_t>(*a.r, a.n_layer, a.n_head, [](const HeadAnalysis& h) { return h.kv_head; }); })
      .def_property_readonly("best_offset", [](const PyAnalysis& a) {
        return head_field<int32_t>(*a.r, a.n_layer, a.n_head, [](const HeadAnalysis& h) { return h.best_offset; }); })
      .def_property_readonly("period", [](const PyAnalysis& a) {
        return head_field<int32_t>(*a.r, a.n_layer, a.n_head, [](const HeadAnalysis& h) { return h.period; }); })
      .def_property_readonly("dominant_channel", [](const PyAnalysis& a) {
        return head_field<int32_t>(*a.r, a.n_layer, a.n_head, [](const HeadAnalysis& h) { return h.dominant_channel; }); })
      .def_property_readonly("prediction_agrees", [](const PyAnalysis& a) {
        return head_field<uint8_t>(*a.r, a.n_layer, a.n_head, [](const HeadAnalysis& h) { return h.prediction_agrees; })
            .attr("astype")("bool"); })
      .def_property_readonly("labels", [](const PyAnalysis& a) {
        return head_strings(*a.r, a.n_layer, a.n_head, [](const HeadAnalysis& h) { return h.label; }); },
        "The measured pattern per [layer][head]: reaccess, sequential, periodic_sequential, seasonal, unpredictable, mixed")
      .def_property_readonly("predicted_labels", [](const PyAnalysis& a) {
        return head_strings(*a.r, a.n_layer, a.n_head, [](const HeadAnalysis& h) { return h.predicted_label; }); },
        "The pattern the paper's theorems predict from q-similarity and the RoPE channels, per [layer][head]")
      .def_property_readonly("channel_energy", [](const PyAnalysis& a) {
        size_t C = 0;
        for (const HeadAnalysis& h : a.r->heads) C = std::max(C, h.channel_energy.size());
        std::vector<double> v(static_cast<size_t>(a.n_layer) * a.n_head * C, 0.0);
        for (const HeadAnalysis& h : a.r->heads)
          std::copy(h.channel_energy.begin(), h.channel_energy.end(),
                    v.begin() + (static_cast<size_t>(h.layer) * a.n_head + h.head) * C);
        return py::array_t<double>(std::vector<py::ssize_t>{a.n_layer, a.n_head, static_cast<py::ssize_t>(C)}, v.data());
      }, "RoPE channel energies, [n_layer, n_head, n_rot / 2]")
      .def_property_readonly("layer_qsim", [](const PyAnalysis& a) {
        py::dict d;
        std::vector<double> pl, pr, ps, qs, l1, k1;
        std::vector<int32_t> win;
        for (const LayerAnalysis& l : a.r->layers) {
          pl.push_back(l.qsim_post_last), pr.push_back(l.qsim_pre_last), ps.push_back(l.qsim_pre_sliding);
          qs.push_back(l.qsim_post_sliding), l1.push_back(l.qsim_lag1), k1.push_back(l.ksim_lag1);
          win.push_back(l.window);
        }
        d["qsim_post_last"] = to_array(pl), d["qsim_pre_last"] = to_array(pr), d["qsim_pre_sliding"] = to_array(ps);
        d["qsim_post_sliding"] = to_array(qs), d["qsim_lag1"] = to_array(l1), d["ksim_lag1"] = to_array(k1);
        d["window"] = to_array(win);
        return d;
      }, "Per-layer means over the query heads (dict of arrays [n_layer]; window: 0 for global layers)")
      .def_property_readonly("report", [](const PyAnalysis& a) { return json_to_py(a.r->report); },
                             "report.json's content as Python objects")
      .def("write_report", [](const PyAnalysis& a, const std::string& out_dir) {
             nlohmann::json j;
             {
               py::gil_scoped_release nogil;
               j = write_analysis_report(*a.r, out_dir);
             }
             return json_to_py(j);
           }, py::arg("out_dir"), "Writes out_dir/report.json, report.html and maps/*.png; returns the JSON");

  m.def("analyze",
        [](std::shared_ptr<Model> model, const std::string& text, int max_tokens, int generate, const std::string& qsim_mode,
           int last_window, int sliding_window, int sliding_stride, int rows, int n_threads, std::string input_name,
           std::shared_ptr<CancelToken> cancel) {
          AnalysisOptions o;
          o.input_name = std::move(input_name);
          o.max_tokens = max_tokens;
          o.generate = generate;
          o.qsim_mode = qsim_mode;
          o.last_window = last_window;
          o.sliding_window = sliding_window;
          o.sliding_stride = sliding_stride;
          o.rows = rows;
          o.n_threads = n_threads;
          auto r = run_cancellable(cancel.get(), [&](const RunControl& rc) {
            return std::make_shared<const AnalysisResult>(analyze_text(*model, text, o, rc));
          });
          return PyAnalysis{std::move(r), model->config().n_layer, model->config().n_head};
        },
        py::arg("model"), py::arg("text"), py::arg("max_tokens") = 2048, py::arg("generate") = 0,
        py::arg("qsim_mode") = "cosine", py::arg("last_window") = 64, py::arg("sliding_window") = 1024,
        py::arg("sliding_stride") = 256, py::arg("rows") = 64, py::arg("n_threads") = 0, py::arg("input_name") = "",
        py::arg("cancel") = nullptr,
        "TAPPA's analysis of `text` (the numbers of `tappa analyze`): q-similarity variants, labels, RoPE channels "
        "and predictions per head, as a tappa.Analysis");

  // ---- Pruning (include/tappa/prune.h) ----------------------------------------------------------
  m.def("calibrate",
        [](std::shared_ptr<Model> model, const std::vector<std::string>& texts, int window, int stride, bool angular,
           int max_windows, int n_threads, std::shared_ptr<CancelToken> cancel) {
          prune::CalibrationOptions o;
          o.window = window;
          o.stride = stride;
          o.angular = angular;
          o.max_windows = max_windows;
          o.n_threads = n_threads;
          prune::CalibrationState st;
          size_t n_windows = 0;
          run_cancellable(cancel.get(), [&](const RunControl& rc) {
            // As `tappa calibrate` cuts them: each text tokenised whole (BOS as the file says), the
            // official windows, the first max_windows of them.
            std::vector<std::vector<int32_t>> toks;
            std::vector<int64_t> lengths;
            for (const std::string& t : texts) {
              toks.push_back(model->tokenizer().encode(t, /*add_special=*/true));
              lengths.push_back(static_cast<int64_t>(toks.back().size()));
            }
            std::vector<prune::WindowRef> w = prune::make_windows(lengths, window, stride);
            if (max_windows > 0 && static_cast<int>(w.size()) > max_windows) w.resize(max_windows);
            if (w.empty()) throw Error(ErrorCode::bad_input, "the calibration texts give no window of at least 2 tokens");
            n_windows = w.size();
            if (rc.on_progress) rc.on_progress(0, static_cast<int64_t>(w.size()));
            prune::run_calibration(*model, toks, w, o, st, [&](const prune::CalibrationState& s) {
              if (rc.on_progress) rc.on_progress(s.windows_done, static_cast<int64_t>(n_windows));
              return !rc.cancel->cancelled();
            });
            if (st.windows_done < static_cast<int>(n_windows)) throw Error(ErrorCode::cancelled, "calibration cancelled");
            return 0;
          });
          py::dict d;
          d["bi"] = to_array(st.bi());
          d["qsim"] = to_array(st.qsim());
          d["windows"] = st.windows_done;
          d["tokens"] = st.tokens_done;
          return d;
        },
        py::arg("model"), py::arg("texts"), py::arg("window") = 1024, py::arg("stride") = 256, py::arg("angular") = false,
        py::arg("max_windows") = 0, py::arg("n_threads") = 0, py::arg("cancel") = nullptr,
        "Per-layer Block Influence and pre-RoPE q-similarity over sliding windows of `texts` (the numbers of "
        "`tappa calibrate`): dict with bi, qsim (numpy [n_layer]), windows, tokens");
  m.def("prune_order",
        [](std::vector<double> bi, std::optional<std::vector<double>> qsim, const std::string& method, double beta) {
          if (method == "shortgpt") return prune::shortgpt_order(bi);
          if (method != "tappa") throw Error(ErrorCode::bad_input, "prune_order: method must be tappa or shortgpt, not " + method);
          if (!qsim) throw Error(ErrorCode::bad_input, "prune_order: method tappa needs qsim");
          if (qsim->size() != bi.size()) throw Error(ErrorCode::bad_input, "prune_order: bi and qsim differ in length");
          return prune::tappa_order(bi, *qsim, beta);
        },
        py::arg("bi"), py::arg("qsim") = py::none(), py::arg("method") = "tappa", py::arg("beta") = 0.2,
        "Layers in pruning order (first pruned first): ShortGPT by ascending BI, TAPPA by BI' = BI_norm + "
        "beta·(1 − qsim_norm) (the numbers of `tappa prune-order`)");
  m.def("prune",
        [](std::shared_ptr<Model> model, std::vector<int> remove, const std::string& out_path) {
          prune::PruneSummary s;
          {
            py::gil_scoped_release nogil;
            s = prune::write_pruned_gguf(model->file(), remove, out_path);
          }
          py::dict d;
          d["n_layer_before"] = s.n_layer_before;
          d["n_layer_after"] = s.n_layer_after;
          d["n_tensors_removed"] = s.n_tensors_removed;
          d["arrays_filtered"] = s.arrays_filtered;
          return d;
        },
        py::arg("model"), py::arg("remove"), py::arg("out_path"),
        "Writes `model` without the blocks `remove` to a GGUF that llama.cpp loads (the file of `tappa prune`)");

  // ---- The eval-kv grid (include/tappa/eval.h) --------------------------------------------------
  m.def("eval_kv",
        [](std::shared_ptr<Model> model, std::vector<std::string> methods, std::vector<int> budgets,
           std::vector<std::string> tasks, std::vector<int> lengths, std::vector<std::string> modes, int samples,
           uint64_t seed, int fidelity_tokens, int greedy_tokens, int longbench_max_new, bool longbench_chat,
           std::vector<std::string> cache_types, std::string data_dir, int threads, py::object results,
           std::shared_ptr<CancelToken> cancel) {
          evalkv::GridConfig c;
          c.methods = std::move(methods);
          for (const std::string& s : c.methods) evalkv::check_method_spec(s);
          c.budgets = std::move(budgets);
          c.tasks = std::move(tasks);
          c.lengths = std::move(lengths);
          c.modes = std::move(modes);
          c.samples = samples;
          c.seed = seed;
          c.fidelity_tokens = fidelity_tokens;
          c.greedy_tokens = greedy_tokens;
          c.longbench_max_new = longbench_max_new;
          c.longbench_chat = longbench_chat;
          c.cache_types = std::move(cache_types);
          c.data_dir = std::move(data_dir);
          c.threads = threads;
          if (model->has_file()) c.model_path = model->file().path();
          // results.json's layout, as `tappa eval-kv` writes it (write_summary reads the config).
          nlohmann::json res;
          if (results.is_none()) {
            res = {{"format", "tappa-eval-kv/1"}, {"config", c.to_json()}, {"cells", nlohmann::json::array()}};
          } else {
            res = py_to_json(results);
            if (!res.contains("config") || res["config"] != c.to_json())
              throw Error(ErrorCode::bad_input, "eval_kv: `results` were made with other settings (methods, budgets, "
                          "tasks, lengths, modes, samples, seed, token counts or model)");
          }
          run_cancellable(cancel.get(), [&](const RunControl& rc) {
            const bool finished = evalkv::run_grid(*model, c, res, [](const nlohmann::json&, bool) {}, rc);
            if (!finished) throw Error(ErrorCode::cancelled, "eval_kv cancelled");
            return 0;
          });
          return json_to_py(res);
        },
        py::arg("model"), py::arg("methods"), py::arg("budgets"), py::arg("tasks"), py::arg("lengths") = std::vector<int>{2048},
        py::arg("modes") = std::vector<std::string>{"query-aware"}, py::arg("samples") = 3, py::arg("seed") = 0,
        py::arg("fidelity_tokens") = 64, py::arg("greedy_tokens") = 32, py::arg("longbench_max_new") = 64,
        py::arg("longbench_chat") = true, py::arg("cache_types") = std::vector<std::string>{"f32"},
        py::arg("data_dir") = "../shared/data", py::arg("threads") = 0, py::arg("results") = py::none(),
        py::arg("cancel") = nullptr,
        "Runs eval-kv cells (the grid of `tappa eval-kv`: methods × budgets over tasks, lengths, modes and samples, "
        "fullkv added as the reference); returns the results object ({'cells': [...]}, results.json's layout). Pass "
        "`results` from an earlier call to run only the cells it lacks");
  m.def("eval_kv_summary", [](py::object results, const std::string& out_dir) {
          const nlohmann::json r = py_to_json(results);
          std::string md;
          {
            py::gil_scoped_release nogil;
            md = evalkv::write_summary(r, out_dir);
          }
          return md;
        }, py::arg("results"), py::arg("out_dir"),
        "Writes results.csv, table.md and plots/*.svg of eval_kv results under out_dir; returns table.md's text");
}
