//! `nearby graph`: the plan's task DAG as Graphviz DOT or Mermaid.

use super::{Foreach, Plan};

fn label(plan: &Plan, i: usize) -> String {
    let t = &plan.tasks[i];
    let fan = match t.foreach.as_deref() {
        None => String::new(),
        Some(Foreach::Items(items)) => format!(" x{}", items.len()),
        Some(Foreach::Range(a, b)) => format!(" x{}", b - a),
        Some(Foreach::Glob(_)) => " x glob".into(),
        Some(Foreach::From { task, .. }) => format!(" x {}", plan.tasks[*task].name),
    };
    format!("{} ({}){}", t.name, t.kind.name(), fan)
}

/// Graphviz DOT, one node per task, edges labelled with the output read.
pub fn dot(plan: &Plan) -> String {
    let mut s = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n",
        plan.name.replace('"', "\\\"")
    );
    for &i in &plan.order {
        s.push_str(&format!(
            "  \"{}\" [label=\"{}\"];\n",
            plan.tasks[i].name,
            label(plan, i).replace('"', "\\\"")
        ));
    }
    for (from, to, output) in edges(plan) {
        s.push_str(&format!("  \"{from}\" -> \"{to}\" [label=\"{output}\"];\n"));
    }
    s.push_str("}\n");
    s
}

/// Mermaid flowchart.
pub fn mermaid(plan: &Plan) -> String {
    let mut s = String::from("flowchart LR\n");
    for &i in &plan.order {
        s.push_str(&format!(
            "  {}[\"{}\"]\n",
            mermaid_id(&plan.tasks[i].name),
            label(plan, i).replace('"', "'")
        ));
    }
    for (from, to, output) in edges(plan) {
        s.push_str(&format!(
            "  {} -->|{}| {}\n",
            mermaid_id(&from),
            output,
            mermaid_id(&to)
        ));
    }
    s
}

fn mermaid_id(name: &str) -> String {
    name.replace('-', "_")
}

/// (from, to, outputs read) for every edge, in plan order.
fn edges(plan: &Plan) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for &to in &plan.order {
        let t = &plan.tasks[to];
        let mut from_edges: Vec<usize> = t.upstream.iter().map(|&u| u as usize).collect();
        from_edges.sort_by_key(|f| plan.order.iter().position(|o| o == f));
        for from in from_edges {
            let mut names: Vec<String> = t
                .inputs
                .iter()
                .filter_map(|(_, src)| match src {
                    super::InputSource::Task { task, output } if *task == from => {
                        Some(output.to_string())
                    }
                    _ => None,
                })
                .collect();
            if let Some(Foreach::From { task, output }) = t.foreach.as_deref() {
                if *task == from {
                    names.push(format!("foreach {output}"));
                }
            }
            names.dedup();
            out.push((
                plan.tasks[from].name.to_string(),
                t.name.to_string(),
                names.join(", "),
            ));
        }
    }
    out
}
