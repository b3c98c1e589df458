# Reference statistics for tests/integration/evaluation/test_against_r.py.
# Usage: Rscript reference.R IN_DIR OUT_CSV
# IN_DIR holds <name>.csv files with columns y, a, b, time, event (a, b are
# probabilities; risk groups are a >= 0.5). The dataset "lung" is built here
# from R survival's own `lung`, independently of the Python side.
suppressPackageStartupMessages({
  library(pROC)
  library(survival)
})

# ResourceSelection::hoslem.test (0.3-6, github psolymos/ResourceSelection
# R/hoslem.test.R), restated here: the Debian archive has no r-cran-resourceselection.
hoslem <- function(x, y, g = 10) {
  yhat <- y
  y <- x
  qq <- unique(quantile(yhat, probs = seq(0, 1, 1 / g)))
  cutyhat <- cut(yhat, breaks = qq, include.lowest = TRUE)
  observed <- xtabs(cbind("y0" = 1 - y, "y1" = y) ~ cutyhat)
  expected <- xtabs(cbind("yhat0" = 1 - yhat, "yhat1" = yhat) ~ cutyhat)
  chisq <- sum((observed - expected)^2 / expected)
  G <- length(unique(cutyhat))
  c(chisq, 1 - pchisq(chisq, G - 2), G - 2)
}

args <- commandArgs(trailingOnly = TRUE)
files <- list.files(args[1], pattern = "\\.csv$", full.names = TRUE)
data <- lapply(files, read.csv)
names(data) <- sub("\\.csv$", "", basename(files))
data$lung <- with(lung, data.frame(
  y = as.integer(time <= 365 & status == 2),
  a = plogis((age - 62) / 5),
  b = plogis(sex - 1.5),
  time = time,
  event = as.integer(status == 2)
))

rows <- list()
for (name in names(data)) {
  d <- data[[name]]
  r1 <- roc(d$y, d$a, levels = c(0, 1), direction = "<", quiet = TRUE)
  r2 <- roc(d$y, d$b, levels = c(0, 1), direction = "<", quiet = TRUE)
  test <- roc.test(r1, r2, method = "delong", paired = TRUE)
  set.seed(1)
  ci <- ci.auc(r1, method = "bootstrap", boot.n = 1000, boot.stratified = TRUE, progress = "none")
  d$g <- as.integer(d$a >= 0.5)
  lr <- survdiff(Surv(time, event) ~ g, data = d)
  fit <- summary(coxph(Surv(time, event) ~ g, data = d))
  recal <- coef(glm(y ~ qlogis(a), family = binomial, data = d,
                    control = glm.control(epsilon = 1e-14, maxit = 100)))
  hl <- hoslem(d$y, d$a, 10)
  # Harrell's C of the score against survival time, "larger a = longer survival".
  cindex <- concordance(Surv(time, event) ~ a, data = d)$concordance
  rows[[name]] <- data.frame(
    name = name, n = nrow(d),
    auc_a = as.numeric(auc(r1)), auc_b = as.numeric(auc(r2)),
    z = unname(test$statistic), p = test$p.value,
    ci_lo = ci[1], ci_hi = ci[3],
    logrank_chi2 = lr$chisq, logrank_p = pchisq(lr$chisq, 1, lower.tail = FALSE),
    hr = fit$conf.int[1, "exp(coef)"], hr_lo = fit$conf.int[1, "lower .95"],
    hr_hi = fit$conf.int[1, "upper .95"], cox_p = fit$coefficients[1, "Pr(>|z|)"],
    cal_intercept = unname(recal[1]), cal_slope = unname(recal[2]),
    hl_chi2 = hl[1], hl_p = hl[2], hl_df = hl[3], c_index = cindex
  )
}
write.csv(do.call(rbind, rows), args[2], row.names = FALSE)
