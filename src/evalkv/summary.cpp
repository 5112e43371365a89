#include "evalkv/summary.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "report/atomic_write.h"
#include "report/svg.h"

namespace tappa::evalkv {
namespace {

std::string csv_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += "\"\"";
    else out.push_back(c);
  }
  return out + "\"";
}

std::string fmt(double v, int d) { return report::svg::fixed(v, d); }

// Scores are fractions; tables print them as percentages.
std::string pct(const MeanSe& m) {
  if (m.n == 0) return "—";
  return fmt(100 * m.mean, 1) + " ± " + fmt(100 * m.se, 1);
}

struct Key {
  std::string task, mode, method;
  int budget;
  bool operator<(const Key& o) const {
    return std::tie(task, mode, method, budget) < std::tie(o.task, o.mode, o.method, o.budget);
  }
};

std::string budget_name(int b) { return b == 0 ? "full" : std::to_string(b); }

}  // namespace

MeanSe mean_se(const std::vector<double>& v) {
  MeanSe m;
  m.n = static_cast<int>(v.size());
  if (v.empty()) return m;
  double s = 0;
  for (double x : v) s += x;
  m.mean = s / v.size();
  if (v.size() >= 2) {
    double ss = 0;
    for (double x : v) ss += (x - m.mean) * (x - m.mean);
    m.se = std::sqrt(ss / (v.size() - 1) / v.size());
  }
  return m;
}

std::string cells_csv(const nlohmann::json& results) {
  std::ostringstream o;
  o << "task,length,sample,mode,method,budget,score,kl,top1,nll,nll_full,greedy_agree,n_prompt,kept_fraction,"
       "seconds,prediction\n";
  auto num = [](const nlohmann::json& c, const char* k) -> std::string {
    if (!c.contains(k)) return "";
    std::ostringstream s;
    s.precision(9);
    s << c[k].get<double>();
    return s.str();
  };
  for (const auto& c : results.value("cells", nlohmann::json::array())) {
    o << csv_quote(c["task"].get<std::string>()) << ',' << c["length"].get<int>() << ',' << c["sample"].get<int>() << ','
      << c["mode"].get<std::string>() << ',' << csv_quote(c["method"].get<std::string>()) << ','
      << budget_name(c["budget"].get<int>()) << ',' << num(c, "score") << ',' << num(c, "kl") << ',' << num(c, "top1")
      << ',' << num(c, "nll") << ',' << num(c, "nll_full") << ',' << num(c, "greedy_agree") << ','
      << c.value("n_prompt", 0) << ',' << num(c, "kept_fraction") << ',' << num(c, "seconds") << ','
      << csv_quote(c.value("prediction", std::string())) << '\n';
  }
  return o.str();
}

std::string write_summary(const nlohmann::json& results, const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(fs::path(dir) / "plots");
  const auto& cells = results.value("cells", nlohmann::json::array());
  const auto& cfg = results.value("config", nlohmann::json::object());
  std::vector<std::string> method_order, task_order, mode_order;
  std::vector<int> budget_order;
  for (const auto& m : cfg.value("methods", nlohmann::json::array())) method_order.push_back(m.get<std::string>());
  if (std::find(method_order.begin(), method_order.end(), "fullkv") == method_order.end())
    method_order.insert(method_order.begin(), "fullkv");
  for (const auto& t : cfg.value("tasks", nlohmann::json::array())) task_order.push_back(t.get<std::string>());
  for (const auto& b : cfg.value("budgets", nlohmann::json::array())) budget_order.push_back(b.get<int>());

  // Per (task, mode, method, budget): scores; fidelity also kl / nll / greedy agreement.
  std::map<Key, std::vector<double>> score, kl, nll, agree, nll_full;
  std::map<std::pair<std::string, int>, std::vector<std::vector<double>>> layer_budgets;  // (method, budget)
  std::set<std::string> modes;
  for (const auto& c : cells) {
    const Key k{c["task"], c["mode"], c["method"], c["budget"]};
    modes.insert(k.mode);
    score[k].push_back(c.value("score", 0.0));
    if (c.contains("kl")) {
      kl[k].push_back(c["kl"].get<double>());
      nll[k].push_back(c["nll"].get<double>());
      nll_full[k].push_back(c["nll_full"].get<double>());
      agree[k].push_back(c["greedy_agree"].get<double>());
    }
    if (c.contains("layer_budgets")) {
      std::vector<double> lb;
      for (const auto& x : c["layer_budgets"]) lb.push_back(x.get<double>());
      layer_budgets[{k.method, k.budget}].push_back(lb);
    }
  }
  auto budgets_for = [&](const std::string& method) {
    return method == "fullkv" ? std::vector<int>{0} : budget_order;
  };
  auto is_fid = [](const std::string& t) { return t.rfind("fidelity_", 0) == 0; };

  std::ostringstream md;
  md << "# eval-kv results\n\n";
  md << "Model `" << cfg.value("model", std::string("?")) << "`; lengths";
  for (const auto& l : cfg.value("lengths", nlohmann::json::array())) md << " " << l.get<int>();
  md << "; " << cfg.value("samples", 0) << " samples per task and length; seed " << cfg.value("seed", 0) << ". "
     << cells.size() << " cells" << (results.value("complete", false) ? "" : " (INCOMPLETE run)") << ".\n\n";
  md << "Scores are percentages, mean ± standard error over samples (and lengths). Budgets are tokens per layer "
        "on average, the 32-token window included; `full` is the uncompressed cache.\n\n";

  // Compact summaries: method × budget, the mean over a family of tasks (generated RULER-style
  // tasks; LongBench tasks), each task weighted equally; SE combined from the per-task SEs.
  auto is_lb = [](const std::string& t) { return t.rfind("longbench", 0) == 0; };
  for (const std::string& mode : modes) {
    if (mode == "continuation") continue;
    for (int family = 0; family < 2; ++family) {
      std::vector<std::string> tasks;
      for (const auto& t : task_order)
        if (!is_fid(t) && is_lb(t) == (family == 1)) tasks.push_back(t);
      if (tasks.empty()) continue;
      md << "## Summary, " << mode << ": " << (family ? "LongBench" : "generated tasks") << " (mean of " << tasks.size()
         << " task" << (tasks.size() > 1 ? "s" : "") << ")\n\n| method |";
      for (int b : budget_order) md << " " << b << " |";
      md << "\n|---|";
      for (size_t i = 0; i < budget_order.size(); ++i) md << "---:|";
      md << "\n";
      for (const auto& m : method_order) {
        md << "| " << m << " |";
        for (int b0 : budget_order) {
          const int b = m == "fullkv" ? 0 : b0;
          double sum = 0, var = 0;
          int k = 0;
          for (const auto& t : tasks) {
            const auto it = score.find({t, mode, m, b});
            if (it == score.end()) continue;
            const MeanSe ms = mean_se(it->second);
            sum += ms.mean;
            var += ms.se * ms.se;
            ++k;
          }
          if (k == static_cast<int>(tasks.size())) md << " " << fmt(100 * sum / k, 1) << " ± " << fmt(100 * std::sqrt(var) / k, 1) << " |";
          else md << " — |";
        }
        md << "\n";
      }
      md << "\n";
    }
  }
  {
    double cell_s = 0, prefill_s = 0;
    for (const auto& c : cells) {
      cell_s += c.value("seconds", 0.0);
      prefill_s += c.value("prefill_seconds", 0.0);
    }
    md << "Compute: " << fmt(prefill_s, 0) << " s of shared prefills + " << fmt(cell_s, 0)
       << " s in the cells (wall-clock, summed).\n\n";
  }

  std::vector<std::string> svgs;
  for (const std::string& mode : modes) {
    if (mode == "continuation") continue;
    std::vector<std::string> tasks;
    for (const auto& t : task_order)
      if (!is_fid(t)) tasks.push_back(t);
    if (tasks.empty()) continue;
    md << "## Task scores, " << mode << "\n\n| method | budget |";
    for (const auto& t : tasks) md << " " << t << " |";
    md << " task mean |\n|---|---:|";
    for (size_t i = 0; i <= tasks.size(); ++i) md << "---:|";
    md << "\n";
    // Plot: task mean vs budget, one series per method.
    std::vector<report::svg::Series> series;
    for (const auto& m : method_order) {
      report::svg::Series s;
      s.name = m;
      for (int b : budgets_for(m)) {
        md << "| " << m << " | " << budget_name(b) << " |";
        double sum = 0, var = 0;
        int k = 0;
        for (const auto& t : tasks) {
          const auto it = score.find({t, mode, m, b});
          const MeanSe ms = it == score.end() ? MeanSe{} : mean_se(it->second);
          md << " " << pct(ms) << " |";
          if (ms.n) {
            sum += ms.mean;
            var += ms.se * ms.se;
            ++k;
          }
        }
        // Mean over tasks of the task means; its SE combines the tasks' SEs (independent samples).
        if (k) md << " " << fmt(100 * sum / k, 1) << " ± " << fmt(100 * std::sqrt(var) / k, 1) << " |\n";
        else md << " — |\n";
        if (k && b > 0) {
          s.x.push_back(b);
          s.y.push_back(100 * sum / k);
        }
        if (k && b == 0) {
          // The full cache is a horizontal reference line across the budgets.
          for (int bb : budget_order) {
            s.x.push_back(bb);
            s.y.push_back(100 * sum / k);
          }
          s.dashed = true;
          s.markers = false;
        }
      }
      series.push_back(std::move(s));
    }
    md << "\n";
    report::svg::ChartOptions opt;
    opt.title = "Task mean score vs KV budget (" + mode + ")";
    opt.x_label = "budget (tokens per layer)";
    opt.y_label = "score (%)";
    opt.width = 720;
    opt.height = 380;
    const std::string name = "score_vs_budget_" + mode + ".svg";
    report::atomic_write((fs::path(dir) / "plots" / name).string(), report::svg::line_chart(series, opt));
    svgs.push_back(name);
    // One plot per task as well.
    for (const auto& t : tasks) {
      std::vector<report::svg::Series> ts;
      for (const auto& m : method_order) {
        report::svg::Series s;
        s.name = m;
        for (int b : budgets_for(m)) {
          const auto it = score.find({t, mode, m, b});
          if (it == score.end()) continue;
          const double y = 100 * mean_se(it->second).mean;
          if (b == 0) {
            for (int bb : budget_order) {
              s.x.push_back(bb);
              s.y.push_back(y);
            }
            s.dashed = true;
            s.markers = false;
          } else {
            s.x.push_back(b);
            s.y.push_back(y);
          }
        }
        ts.push_back(std::move(s));
      }
      report::svg::ChartOptions o2 = opt;
      o2.title = t + " (" + mode + ")";
      o2.width = 560;
      o2.height = 320;
      report::atomic_write((fs::path(dir) / "plots" / (t + "_" + mode + ".svg")).string(), report::svg::line_chart(ts, o2));
    }
  }

  // Fidelity.
  std::vector<std::string> fid_tasks;
  for (const auto& t : task_order)
    if (is_fid(t)) fid_tasks.push_back(t);
  for (const auto& t : fid_tasks) {
    md << "## Fidelity to the full cache: " << t << "\n\n"
       << "KL(full ‖ compressed) in nats and top-1 agreement, mean over the teacher-forced continuation tokens; "
          "NLL of the true continuation (nats/token); greedy agreement = tokens until the greedy output first "
          "differs from the full cache's (of "
       << cfg.value("greedy_tokens", 0) << ").\n\n"
       << "| method | budget | KL | top-1 (%) | NLL | greedy agreement |\n|---|---:|---:|---:|---:|---:|\n";
    std::vector<report::svg::Series> kls, tops;
    for (const auto& m : method_order) {
      report::svg::Series sk, st;
      sk.name = st.name = m;
      for (int b : budgets_for(m)) {
        const Key k{t, "continuation", m, b};
        if (!score.count(k)) continue;
        const MeanSe a = mean_se(kl[k]), top = mean_se(score[k]), n = mean_se(nll[k]), g = mean_se(agree[k]);
        md << "| " << m << " | " << budget_name(b) << " | " << fmt(a.mean, 4) << " ± " << fmt(a.se, 4) << " | "
           << pct(top) << " | " << fmt(n.mean, 3) << " ± " << fmt(n.se, 3) << " | " << fmt(g.mean, 1) << " ± "
           << fmt(g.se, 1) << " |\n";
        if (b > 0) {
          sk.x.push_back(b);
          sk.y.push_back(a.mean);
          st.x.push_back(b);
          st.y.push_back(100 * top.mean);
        }
      }
      if (m != "fullkv") {
        kls.push_back(std::move(sk));
        tops.push_back(std::move(st));
      }
    }
    md << "\n";
    report::svg::ChartOptions opt;
    opt.x_label = "budget (tokens per layer)";
    opt.width = 560;
    opt.height = 320;
    opt.title = "KL to the full cache vs budget — " + t;
    opt.y_label = "KL (nats)";
    opt.y_min = 0;
    report::atomic_write((fs::path(dir) / "plots" / (t + "_kl.svg")).string(), report::svg::line_chart(kls, opt));
    opt.title = "Top-1 agreement vs budget — " + t;
    opt.y_label = "top-1 agreement (%)";
    opt.y_min.reset();
    report::atomic_write((fs::path(dir) / "plots" / (t + "_top1.svg")).string(), report::svg::line_chart(tops, opt));
  }

  // Per-layer budgets of the non-uniform allocators.
  md << "## Per-layer budgets (mean over every cell)\n\n";
  for (int b : budget_order) {
    std::vector<report::svg::Series> ls;
    for (const auto& m : method_order) {
      const auto it = layer_budgets.find({m, b});
      if (it == layer_budgets.end() || it->second.empty()) continue;
      const auto& all = it->second;
      const size_t L = all[0].size();
      std::vector<double> mean(L, 0.0);
      for (const auto& v : all)
        for (size_t l = 0; l < L && l < v.size(); ++l) mean[l] += v[l] / all.size();
      bool uniform = true;
      for (double x : mean) uniform &= std::fabs(x - mean[0]) < 1e-9;
      if (uniform && m != "pyramidkv") continue;  // uniform allocators are a flat line: left out
      report::svg::Series s;
      s.name = m;
      for (size_t l = 0; l < L; ++l) {
        s.x.push_back(static_cast<double>(l));
        s.y.push_back(mean[l]);
      }
      ls.push_back(std::move(s));
    }
    if (ls.empty()) continue;
    report::svg::ChartOptions opt;
    opt.title = "Tokens kept per layer at budget " + std::to_string(b);
    opt.x_label = "layer";
    opt.y_label = "budget (tokens, window included)";
    opt.x_integer = true;
    opt.width = 640;
    opt.height = 320;
    const std::string name = "layer_budgets_" + std::to_string(b) + ".svg";
    report::atomic_write((fs::path(dir) / "plots" / name).string(), report::svg::line_chart(ls, opt));
    md << "![per-layer budgets at " << b << "](plots/" << name << ")\n\n";
  }
  for (const auto& s : svgs) md << "![" << s << "](plots/" << s << ")\n\n";
  const std::string text = md.str();
  report::atomic_write((fs::path(dir) / "table.md").string(), text);
  report::atomic_write((fs::path(dir) / "results.csv").string(), cells_csv(results));
  return text;
}

}  // namespace tappa::evalkv
