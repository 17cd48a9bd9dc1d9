predict = predict_proba = None
